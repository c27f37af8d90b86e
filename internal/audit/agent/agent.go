// Package agent is ward's audit shipping agent (seed 002, rules 2–10): it
// tails the audit files of its host, redacts every line before it leaves
// the host, adds host and container context, and publishes to NATS
// JetStream with a message ID derived from the file and offset, so a
// retried publish is de-duplicated. File offsets are checkpointed only
// after the broker acknowledged everything before them: an agent killed
// at any moment resumes without losing or (within the broker's duplicate
// window, and at the collector after it) duplicating an event. It
// publishes heartbeats with its lag and health.
package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/atomicfile"
	"github.com/wardsec/ward/internal/audit/redact"
)

// Subjects. Events go to ward.v1.audit.events.<host>, heartbeats to
// ward.v1.audit.heartbeat.<host>; an agent may publish only to its own.
const (
	SubjectEventsPrefix    = "ward.v1.audit.events."
	SubjectHeartbeatPrefix = "ward.v1.audit.heartbeat."
)

// Msg is one message to publish.
type Msg struct {
	Subject string
	ID      string // de-duplication ID (Nats-Msg-Id)
	Data    []byte
}

// Publisher publishes a batch and returns once the broker acknowledged
// every message (an error otherwise: the batch is published again).
type Publisher interface {
	PublishBatch(ctx context.Context, msgs []Msg) error
	Publish(ctx context.Context, subject string, data []byte) error
}

// Config configures New.
type Config struct {
	Dir       string // the audit files (*.audit.jsonl and rotated *.audit.jsonl.*). Required.
	StateFile string // checkpoints (default <Dir>/.agent-state.json)
	Publisher Publisher
	Host      string // default os.Hostname
	Container string // optional container context
	Redactor  *redact.Redactor
	// Poll is how often the files are checked: default 200ms.
	Poll time.Duration
	// BatchBytes bounds the lines read per file and round: default 1 MiB.
	BatchBytes int
	// Heartbeat is the heartbeat interval: default 10s.
	Heartbeat time.Duration
	// PartialGrace is how long a rotated file's unterminated last line is
	// waited for before it is skipped as never written whole: default 30s.
	PartialGrace time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
}

// fileState is the checkpoint of one file, identified by device, inode
// and a hash of its first bytes (inodes are reused after deletion).
type fileState struct {
	Path   string `json:"path"`
	Dev    uint64 `json:"dev"`
	Ino    uint64 `json:"ino"`
	Head   string `json:"head"`
	HeadN  int    `json:"head_n"` // bytes Head covers (< headLen while the file is young)
	Offset int64  `json:"offset"`
	// Skipping: the bytes at Offset continue an oversized line, to be
	// skipped up to its end.
	Skipping bool `json:"skipping,omitempty"`
	// Gen counts truncations: offsets restart, message IDs must not.
	Gen int `json:"gen,omitempty"`
	// partialSince is when the file was first seen ending in an
	// unterminated line at Offset (not persisted).
	partialSince time.Time
}

// Stats are the agent's counters.
type Stats struct {
	Published, Redacted, Raw, TooLarge, SkippedPartial, Errors uint64
	LagBytes                                                   int64
	Files                                                      int
}

// Agent ships audit files. Run it with Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	subject string
	files   map[string]*fileState // by identity key

	published, redacted, raw, tooLarge, skipped, errs atomic.Uint64
	lag                                               atomic.Int64
	nfiles                                            atomic.Int64
	lastErr                                           atomic.Pointer[string]
}

const headLen = 64

// New checks cfg and loads the checkpoints.
func New(cfg Config) (*Agent, error) {
	if cfg.Dir == "" || cfg.Publisher == nil || cfg.Redactor == nil {
		return nil, errors.New("agent: Dir, Publisher and Redactor are required")
	}
	if cfg.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("agent: host name: %w", err)
		}
		cfg.Host = h
	}
	host := sanitizeToken(cfg.Host)
	if cfg.StateFile == "" {
		cfg.StateFile = filepath.Join(cfg.Dir, ".agent-state.json")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 1 << 20
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.PartialGrace <= 0 {
		cfg.PartialGrace = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Agent{cfg: cfg, log: cfg.Logger, subject: SubjectEventsPrefix + host, files: map[string]*fileState{}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := a.load(); err != nil {
		return nil, err
	}
	return a, nil
}

// SubjectToken is the token a host name becomes in the agent's subjects
// (ward.v1.audit.events.<token>).
func SubjectToken(host string) string { return sanitizeToken(host) }

// sanitizeToken makes a host name a single NATS subject token.
func sanitizeToken(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}

// Subject is where this agent publishes events.
func (a *Agent) Subject() string { return a.subject }

// Stats returns the counters.
func (a *Agent) Stats() Stats {
	return Stats{Published: a.published.Load(), Redacted: a.redacted.Load(), Raw: a.raw.Load(), TooLarge: a.tooLarge.Load(),
		SkippedPartial: a.skipped.Load(), Errors: a.errs.Load(), LagBytes: a.lag.Load(), Files: int(a.nfiles.Load())}
}

func (a *Agent) load() error {
	data, err := os.ReadFile(a.cfg.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent: state: %w", err)
	}
	var list []*fileState
	if err := json.Unmarshal(data, &list); err != nil {
		// A corrupt state file: start over; the broker and the collector
		// de-duplicate what is shipped again.
		a.log.Warn("agent: state file unreadable; shipping every file again", "error", err)
		return nil
	}
	for _, f := range list {
		a.files[key(f.Dev, f.Ino, f.Head)] = f
	}
	return nil
}

func (a *Agent) save() error {
	list := make([]*fileState, 0, len(a.files))
	for _, f := range a.files {
		list = append(list, f)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Path < list[j].Path })
	data, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return atomicfile.Write(a.cfg.StateFile, data, 0o600)
}

func key(dev, ino uint64, head string) string {
	return strconv.FormatUint(dev, 10) + ":" + strconv.FormatUint(ino, 10) + ":" + head
}

// Run ships until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	poll := time.NewTicker(a.cfg.Poll)
	defer poll.Stop()
	hb := time.NewTicker(a.cfg.Heartbeat)
	defer hb.Stop()
	a.heartbeat(ctx)
	for {
		if err := a.Once(ctx); err != nil && ctx.Err() == nil {
			a.errs.Add(1)
			msg := err.Error()
			a.lastErr.Store(&msg)
			a.log.Warn("agent: shipping failed; retrying from the last checkpoint", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-hb.C:
			a.heartbeat(ctx)
		case <-poll.C:
		}
	}
}

// heartbeat publishes the agent's health (seed 002, rule 8).
func (a *Agent) heartbeat(ctx context.Context) {
	st := a.Stats()
	hb := map[string]any{"host": a.cfg.Host, "time": a.cfg.Now().UTC(), "lag_bytes": st.LagBytes, "files": st.Files,
		"published": st.Published, "redacted": st.Redacted, "errors": st.Errors, "healthy": true}
	if p := a.lastErr.Load(); p != nil {
		hb["last_error"], hb["healthy"] = *p, st.LagBytes == 0
	}
	data, _ := json.Marshal(hb)
	if err := a.cfg.Publisher.Publish(ctx, SubjectHeartbeatPrefix+sanitizeToken(a.cfg.Host), data); err != nil && ctx.Err() == nil {
		a.log.Debug("agent: heartbeat not published", "error", err)
	}
}

// Once ships what the files hold now: every complete line, in file order,
// checkpointing after each acknowledged batch.
func (a *Agent) Once(ctx context.Context) error {
	paths, err := filepath.Glob(filepath.Join(a.cfg.Dir, "*.audit.jsonl*"))
	if err != nil {
		return err
	}
	// Oldest rotated files first, the active one last (per service).
	sort.Slice(paths, func(i, j int) bool { return rotationOrder(paths[i]) < rotationOrder(paths[j]) })
	seen := map[string]bool{}
	var lag int64
	for _, p := range paths {
		if ctx.Err() != nil {
			return nil
		}
		fs, size, err := a.track(p)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) { // deleted under us: fine
				a.log.Warn("agent: cannot read an audit file", "path", p, "error", err)
			}
			continue
		}
		seen[key(fs.Dev, fs.Ino, fs.Head)] = true
		for fs.Offset < size {
			n, err := a.ship(ctx, p, fs, size)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
		}
		lag += max(0, size-fs.Offset)
	}
	changed := false
	for k := range a.files {
		if !seen[k] {
			delete(a.files, k) // the file is gone
			changed = true
		}
	}
	if changed {
		if err := a.save(); err != nil {
			return fmt.Errorf("agent: save state: %w", err)
		}
	}
	a.lag.Store(lag)
	a.nfiles.Store(int64(len(a.files)))
	return nil
}

// rotationOrder sorts <svc>.audit.jsonl.<nanos> before <svc>.audit.jsonl.
func rotationOrder(p string) string {
	base := filepath.Base(p)
	if i := bytes.Index([]byte(base), []byte(".audit.jsonl")); i >= 0 {
		svc, rest := base[:i], base[i+len(".audit.jsonl"):]
		if rest == "" {
			return svc + "\x00~"
		}
		return svc + "\x00" + fmt.Sprintf("%030s", rest[1:])
	}
	return base
}

// track returns the state of the file at p, registering it when new and
// resetting it when truncated.
func (a *Agent) track(p string) (*fileState, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, 0, errors.New("agent: no inode information on this platform")
	}
	head := make([]byte, headLen)
	n, _ := io.ReadFull(f, head)
	sum := sha256.Sum256(head[:n])
	h := hex.EncodeToString(sum[:8])
	size := st.Size()
	// The same inode with another head: a young file that grew (its old
	// head is a prefix of the new one), or a file rewritten in place or a
	// reused inode (read from the start, under new message IDs).
	k := key(uint64(sys.Dev), uint64(sys.Ino), h)
	fs, ok := a.files[k]
	if !ok {
		for k2, cand := range a.files {
			if cand.Dev != uint64(sys.Dev) || cand.Ino != uint64(sys.Ino) {
				continue
			}
			prefix := sha256.Sum256(head[:min(cand.HeadN, n)])
			grown := cand.HeadN <= n && hex.EncodeToString(prefix[:8]) == cand.Head
			delete(a.files, k2)
			if !grown {
				a.log.Warn("agent: audit file rewritten in place; reading it from the start", "path", p)
				cand.Offset, cand.Skipping = 0, false
				cand.Gen++
			}
			cand.Head, cand.HeadN = h, n
			a.files[k], fs, ok = cand, cand, true
			break
		}
	}
	if !ok {
		fs = &fileState{Path: p, Dev: uint64(sys.Dev), Ino: uint64(sys.Ino), Head: h, HeadN: n}
		a.files[k] = fs
	}
	fs.Path = p
	if size < fs.Offset { // truncated: start again
		a.log.Warn("agent: audit file truncated; reading it from the start", "path", p)
		fs.Offset, fs.Skipping = 0, false
		fs.Gen++
	}
	return fs, size, nil
}

// ship reads complete lines after fs.Offset (up to BatchBytes), publishes
// them and advances the checkpoint. It returns the bytes consumed.
func (a *Agent) ship(ctx context.Context, p string, fs *fileState, size int64) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, nil // deleted under us: its state goes on the next round
	}
	defer f.Close()
	want := min(int64(a.cfg.BatchBytes), size-fs.Offset)
	buf := make([]byte, want)
	n, err := f.ReadAt(buf, fs.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	buf = buf[:n]
	var msgs []Msg
	consumed := int64(0)
	if fs.Skipping {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return a.commit(ctx, fs, nil, int64(len(buf)), true)
		}
		fs.Skipping = false
		consumed = int64(i) + 1
		buf = buf[i+1:]
	}
	for len(buf) > 0 {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			if consumed > 0 {
				break // the rest next round
			}
			if len(buf) > audit.MaxLineSize {
				// An oversized line: skip what we have and keep skipping
				// until its end.
				msgs = append(msgs, a.marker(fs, fs.Offset, audit.KindTooLarge, map[string]any{"bytes_at_least": len(buf)}))
				a.tooLarge.Add(1)
				fs.Skipping = true
				return a.commit(ctx, fs, msgs, int64(len(buf)), true)
			}
			// An unterminated last line: wait for its end; give up on it
			// after a grace period if the file is no longer written.
			if fs.partialSince.IsZero() {
				fs.partialSince = a.cfg.Now()
			} else if a.cfg.Now().Sub(fs.partialSince) > a.cfg.PartialGrace && isRotated(p) {
				a.skipped.Add(1)
				a.log.Warn("agent: skipping an unterminated last line of a rotated file", "path", p, "bytes", len(buf))
				fs.partialSince = time.Time{}
				return a.commit(ctx, fs, nil, int64(len(buf)), true)
			}
			return 0, nil
		}
		fs.partialSince = time.Time{}
		line := buf[:i]
		off := fs.Offset + consumed
		consumed += int64(i) + 1
		buf = buf[i+1:]
		if len(line) > audit.MaxLineSize {
			msgs = append(msgs, a.marker(fs, off, audit.KindTooLarge, map[string]any{"bytes": len(line)}))
			a.tooLarge.Add(1)
			continue
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		msgs = append(msgs, Msg{Subject: a.subject, ID: a.msgID(fs, off), Data: a.prepare(line)})
	}
	return a.commit(ctx, fs, msgs, consumed, false)
}

func isRotated(p string) bool { return filepath.Ext(p) != ".jsonl" }

// commit publishes msgs and, once acknowledged, moves the checkpoint.
func (a *Agent) commit(ctx context.Context, fs *fileState, msgs []Msg, consumed int64, force bool) (int64, error) {
	if len(msgs) > 0 {
		if err := a.cfg.Publisher.PublishBatch(ctx, msgs); err != nil {
			return 0, fmt.Errorf("agent: publish: %w", err)
		}
		a.published.Add(uint64(len(msgs)))
	}
	if consumed == 0 && !force {
		return 0, nil
	}
	fs.Offset += consumed
	if err := a.save(); err != nil {
		return 0, fmt.Errorf("agent: save state: %w", err)
	}
	return consumed, nil
}

// msgID is the event's de-duplication ID: the file (a hash of the host
// and the file's identity), its truncation generation and the line's
// offset. IDs of one file grow with the offset, so the collector's
// unique index on them is appended to rather than written at random.
func (a *Agent) msgID(fs *fileState, off int64) string {
	sum := sha256.Sum256([]byte(a.cfg.Host + "\x00" + key(fs.Dev, fs.Ino, fs.Head)))
	var b [16 + 1 + 8 + 1 + 16]byte
	hex.Encode(b[:16], sum[:8])
	b[16] = '-'
	var g [4]byte
	binary.BigEndian.PutUint32(g[:], uint32(fs.Gen))
	hex.Encode(b[17:25], g[:])
	b[25] = '-'
	var o [8]byte
	binary.BigEndian.PutUint64(o[:], uint64(off))
	hex.Encode(b[26:], o[:])
	return string(b[:])
}

// prepare turns a line into what leaves the host: a valid event gets
// host and container context; anything else is wrapped as audit.raw; then
// everything is redacted.
func (a *Agent) prepare(line []byte) []byte {
	if out, ok := a.prepareFast(line); ok {
		return out
	}
	return a.prepareSlow(line)
}

// prepareSlow is prepare for any line: decode, redact, encode.
func (a *Agent) prepareSlow(line []byte) []byte {
	e, err := audit.ParseLine(line)
	if err != nil {
		a.raw.Add(1)
		text := string(bytes.ToValidUTF8(line, []byte("?")))
		if len(text) > 8<<10 {
			text = text[:8<<10]
		}
		e = audit.Event{V: audit.SchemaVersion, Time: a.cfg.Now().UTC(), Kind: audit.KindRaw, Reason: err.Error(),
			Extra: map[string]any{"line": text}}
	}
	if e.Host == "" {
		e.Host = a.cfg.Host
	}
	if a.cfg.Container != "" {
		if e.Extra == nil {
			e.Extra = map[string]any{}
		}
		e.Extra["container"] = a.cfg.Container
	}
	if a.cfg.Redactor.Event(&e) {
		a.redacted.Add(1)
	}
	data, err := json.Marshal(e)
	if err != nil {
		data, _ = json.Marshal(audit.Event{V: audit.SchemaVersion, Time: a.cfg.Now().UTC(), Kind: audit.KindRaw, Host: a.cfg.Host, Reason: "unencodable"})
	}
	return data
}

// marker is an event the agent writes about a line it could not ship.
func (a *Agent) marker(fs *fileState, off int64, kind string, extra map[string]any) Msg {
	extra["file"] = filepath.Base(fs.Path)
	extra["offset"] = off
	if a.cfg.Container != "" {
		extra["container"] = a.cfg.Container
	}
	data, _ := json.Marshal(audit.Event{V: audit.SchemaVersion, Time: a.cfg.Now().UTC(), Kind: kind, Host: a.cfg.Host, Extra: extra})
	return Msg{Subject: a.subject, ID: a.msgID(fs, off), Data: data}
}
