package authority

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// hub applies the change log to this replica (CA view, CRL cache, serving
// certificate) and fans events out to the watch streams connected here.
// Fan-out never blocks: each watcher has a bounded queue, and a watcher
// whose queue is full is disconnected (it resumes with a fresh snapshot).
type hub struct {
	a      *Authority
	wakeCh chan struct{}

	procMu   sync.Mutex   // serializes process
	seq      atomic.Int64 // last event applied
	gapWaits int          // consecutive waits for a missing seq (procMu)

	mu       sync.Mutex
	watchers map[*watcher]struct{}
	closed   bool
}

var errTooManyWatchers = errors.New("authority: too many watch streams")

// watchItem is one event queued for a watcher.
type watchItem struct {
	seq  int64
	line []byte
}

type watcher struct {
	ch     chan *watchItem
	done   chan struct{}
	serial string // of the watcher's client certificate
	id     string // the watcher's SPIFFE ID
	reason string // why it was dropped (set before done closes)
}

func newHub(a *Authority, seq int64) *hub {
	h := &hub{a: a, wakeCh: make(chan struct{}, 1), watchers: map[*watcher]struct{}{}}
	h.seq.Store(seq)
	return h
}

// wake asks the loop to process the log; it never blocks.
func (h *hub) wake() {
	select {
	case h.wakeCh <- struct{}{}:
	default:
	}
}

// process applies every event after the last applied one, in order.
func (h *hub) process(ctx context.Context) {
	h.procMu.Lock()
	defer h.procMu.Unlock()
	const batch = 256
	for {
		evs, err := h.a.st.EventsSince(ctx, h.seq.Load(), batch)
		if err != nil {
			if ctx.Err() == nil {
				h.a.log.ErrorContext(ctx, "reading the event log failed", "error", err)
			}
			return
		}
		for _, ev := range evs {
			last := h.seq.Load()
			// With PostgreSQL a later seq can commit before an earlier one;
			// wait a little for the missing one before skipping it.
			if ev.Seq > last+1 && h.a.now().Sub(ev.CreatedAt) < time.Second && h.gapWaits < 20 {
				h.gapWaits++
				time.AfterFunc(50*time.Millisecond, h.wake)
				return
			}
			h.gapWaits = 0
			h.apply(ctx, ev.Seq, ev.Kind, ev.Payload)
			h.seq.Store(ev.Seq)
		}
		if len(evs) < batch {
			return
		}
	}
}

// apply makes one event effective in this replica.
func (h *hub) apply(ctx context.Context, seq int64, kind string, payload []byte) {
	a := h.a
	switch kind {
	case kindRevocation:
		var p revocationPayload
		if err := json.Unmarshal(payload, &p); err != nil {
			a.log.ErrorContext(ctx, "bad revocation event", "seq", seq, "error", err)
			return
		}
		if p.CAID != "" {
			a.applyCARevocation(ctx, p)
		}
		if p.Service != "" {
			a.serviceRevoked(p.Service, p.At)
		}
		a.crls.invalidate()
		revoked := make(map[string]bool, len(p.Serials))
		for _, s := range p.Serials {
			revoked[s] = true
		}
		h.broadcast(a, seq, kind, payload, revoked, "")
	case kindTokenKeys:
		if err := a.sts.Reload(ctx); err != nil {
			a.log.ErrorContext(ctx, "reloading token signing keys failed", "seq", seq, "error", err)
		}
	case kindCredentialRevocation:
		if a.applyCredentialRevocation(ctx, seq, payload) {
			h.broadcast(a, seq, kind, payload, nil, "")
		}
	case kindAccessList:
		var p accessListPayload
		if err := json.Unmarshal(payload, &p); err != nil || p.Provider == "" {
			a.log.ErrorContext(ctx, "bad accesslist event", "seq", seq, "error", err)
			return
		}
		// Only the provider learns that its list changed.
		h.broadcast(a, seq, kind, payload, nil, p.Provider)
	case kindRoutes:
		// Only gateways load routes.
		h.broadcast(a, seq, kind, payload, nil, a.componentID("gateway").String())
	case kindPolicy:
		var p policyPayload
		if err := json.Unmarshal(payload, &p); err != nil || p.Subject == "" {
			a.log.ErrorContext(ctx, "bad policy event", "seq", seq, "error", err)
			return
		}
		// Only the domain's workloads learn of its bundles.
		h.broadcast(a, seq, kind, payload, nil, p.Subject)
	case kindPassportKeys, kindAgentEntries:
		h.broadcast(a, seq, kind, payload, nil, "")
	case kindBundle, kindCA:
		if err := a.reloadCAs(ctx); err != nil {
			a.log.ErrorContext(ctx, "reloading CAs failed", "seq", seq, "error", err)
		}
		if _, err := a.loadSigningCert(ctx, false); err != nil {
			a.log.ErrorContext(ctx, "reloading the signing certificate failed", "seq", seq, "error", err)
		}
		a.followDefaultIntermediate(ctx)
		a.crls.invalidate()
		if kind == kindBundle {
			h.broadcast(a, seq, kind, payload, nil, "")
		}
	}
}

// broadcast signs the event once and queues it for every watcher (only
// those whose SPIFFE ID is only, when only is set); a full queue or a
// revoked client certificate ends that watcher.
func (h *hub) broadcast(a *Authority, seq int64, kind string, stored []byte, revoked map[string]bool, only string) {
	payload, err := withVersion(stored, seq)
	if err != nil {
		a.log.Error("bad event payload", "seq", seq, "error", err)
		return
	}
	item := &watchItem{seq: seq, line: a.signEvent(seq, kind, payload)}
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		if only != "" && w.id != only {
			continue
		}
		select {
		case w.ch <- item:
		default:
			h.dropLocked(w, "slow")
			continue
		}
		if revoked[w.serial] {
			h.dropLocked(w, "revoked")
		}
	}
}

// add registers a watcher, or fails when the replica has as many as it
// accepts.
func (h *hub) add(serial, id string) (*watcher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if len(h.watchers) >= h.a.tun.maxWatchers {
		return nil, errTooManyWatchers
	}
	w := &watcher{ch: make(chan *watchItem, h.a.tun.watcherBuffer), done: make(chan struct{}), serial: serial, id: id}
	h.watchers[w] = struct{}{}
	h.a.metrics.watchers.Inc()
	return w, nil
}

// remove unregisters a watcher whose stream ended.
func (h *hub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.watchers[w]; ok {
		delete(h.watchers, w)
		h.a.metrics.watchers.Dec()
		close(w.done)
	}
}

func (h *hub) dropLocked(w *watcher, reason string) {
	delete(h.watchers, w)
	h.a.metrics.watchers.Dec()
	h.a.metrics.watchDrops.WithLabelValues(reason).Inc()
	w.reason = reason
	close(w.done)
}

// closeAll ends every stream and refuses new ones.
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.watchers {
		h.dropLocked(w, "shutdown")
	}
}

// count is the number of connected watchers.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers)
}
