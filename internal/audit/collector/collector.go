// Package collector is ward's audit collector: a durable JetStream
// consumer that stores the events agents publish in its own database, in
// batches, chains them per source (each event's hash covers the previous
// one's), and every few seconds signs a checkpoint — a C2SP
// tlog-checkpoint note over the RFC 6962 Merkle root of all stored event
// hashes. Verify checks the chains and the checkpoints offline and names
// the first broken link, so a stored event altered after the fact is found.
package collector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wardsec/ward/internal/audit/agent"
)

// Consumer is the collector's durable JetStream consumer.
const Consumer = "ward-audit-collector"

// Config configures New.
type Config struct {
	Store *Store
	JS    jetstream.JetStream
	// Origin names the log in checkpoints, e.g. "ward.test/audit".
	Origin string
	// Key signs checkpoints; its name is Origin.
	Key ed25519.PrivateKey
	// Batch bounds the events stored per transaction: default 32000 (large
	// transactions write each index page once for many events).
	Batch int
	// Durable names the JetStream consumer: default Consumer. Two
	// collectors with the same name share the stream's events; with
	// different names each stores all of them.
	Durable string
	// CheckpointEvery is the checkpoint interval: default 10s.
	CheckpointEvery time.Duration
	Logger          *slog.Logger
	Now             func() time.Time
}

// Collector consumes, stores and checkpoints.
type Collector struct {
	cfg    Config
	log    *slog.Logger
	tree   tree
	signed int64 // tree size of the last checkpoint
	stored atomic.Int64
	dups   atomic.Int64
}

// New loads the Merkle tree of what is stored.
func New(ctx context.Context, cfg Config) (*Collector, error) {
	if cfg.Store == nil || cfg.JS == nil || cfg.Origin == "" || len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("collector: Store, JS, Origin and Key are required")
	}
	if !validKeyName(cfg.Origin) {
		return nil, fmt.Errorf("collector: origin %q must have no spaces or +", cfg.Origin)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 32000
	}
	if cfg.CheckpointEvery <= 0 {
		cfg.CheckpointEvery = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Durable == "" {
		cfg.Durable = Consumer
	}
	c := &Collector{cfg: cfg, log: cfg.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Store.allHashes(ctx, func(_ int64, h []byte) error { c.tree.append(h); return nil }); err != nil {
		return nil, fmt.Errorf("collector: load: %w", err)
	}
	c.signed = -1
	return c, nil
}

// VerifierKey is the key that verifies this collector's checkpoints.
func (c *Collector) VerifierKey() string {
	return VerifierKey(c.cfg.Origin, c.cfg.Key.Public().(ed25519.PublicKey))
}

// Stored is how many events this process stored; Duplicates how many it
// skipped as already stored.
func (c *Collector) Stored() int64     { return c.stored.Load() }
func (c *Collector) Duplicates() int64 { return c.dups.Load() }

// Run consumes until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	if _, err := agent.EnsureStream(ctx, c.cfg.JS); err != nil {
		return err
	}
	cons, err := c.cfg.JS.CreateOrUpdateConsumer(ctx, agent.Stream, jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		FilterSubject: agent.SubjectEventsPrefix + ">",
		// Explicit acks: with AckAll, acknowledging a batch would also
		// acknowledge an earlier message delivered to a collector that
		// stopped before storing it (found by TestFaults).
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       10 * time.Second, // a message fetched by a collector that stopped comes back after this
		MaxAckPending: 20 * c.cfg.Batch,
	})
	if err != nil {
		return fmt.Errorf("collector: consumer: %w", err)
	}
	last := c.cfg.Now()
	if err := c.checkpoint(ctx); err != nil {
		c.log.Warn("collector: checkpoint failed", "error", err)
	}
	// Two stages on the two cores: the receiver pulls messages and
	// decodes their events' indexed fields while the storer writes the
	// previous batch. A batch whose wait timed out comes empty, so that
	// checkpoints still happen.
	batches := make(chan received, 1)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() { defer close(done); c.receive(rctx, cons, batches) }()
	defer func() { stop(); <-done }()
	for r := range batches {
		if len(r.in) > 0 {
			hashes, dups, err := c.cfg.Store.Insert(ctx, r.in)
			if err != nil {
				// Not acknowledged: redelivered.
				c.log.Error("collector: storing a batch failed", "events", len(r.in), "error", err)
				for _, m := range r.msgs {
					_ = m.Nak()
				}
				continue
			}
			for _, h := range hashes {
				c.tree.append(h)
			}
			c.stored.Add(int64(len(hashes)))
			c.dups.Add(int64(dups))
			for _, m := range r.msgs {
				if err := m.Ack(); err != nil {
					c.log.Debug("collector: ack failed (the message comes again and is skipped as stored)", "error", err)
				}
			}
		}
		if c.cfg.Now().Sub(last) >= c.cfg.CheckpointEvery {
			last = c.cfg.Now()
			if err := c.checkpoint(ctx); err != nil {
				c.log.Warn("collector: checkpoint failed", "error", err)
			}
		}
	}
	// A last checkpoint for what was stored.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.checkpoint(sctx)
	return nil
}

// received is one batch for the storer: the messages to acknowledge and
// their events.
type received struct {
	msgs []jetstream.Msg
	in   []Incoming
}

// receive pulls continuously (up to 64 messages of up to 512 events in
// flight, see agent.BatchHeader) and hands batches of up to Batch events
// to out, which it closes when ctx ends.
func (c *Collector) receive(ctx context.Context, cons jetstream.Consumer, out chan<- received) {
	defer close(out)
	var it jetstream.MessagesContext
	defer func() {
		if it != nil {
			it.Stop()
		}
	}()
	for ctx.Err() == nil {
		if it == nil {
			var err error
			if it, err = cons.Messages(jetstream.PullMaxMessages(64)); err != nil {
				c.log.Warn("collector: subscribe failed; retrying", "error", err)
				it = nil
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
		}
		var r received
		wait := time.Second
		for len(r.in) < c.cfg.Batch {
			m, err := it.Next(jetstream.NextMaxWait(wait))
			if errors.Is(err, nats.ErrTimeout) {
				break
			}
			if err != nil {
				if ctx.Err() == nil {
					c.log.Warn("collector: receive failed; resubscribing", "error", err)
				}
				it.Stop()
				it = nil
				break
			}
			wait = 5 * time.Millisecond // after the first: take what has arrived
			r.msgs = append(r.msgs, m)
			hdr := m.Headers()
			id := hdr.Get("Nats-Msg-Id")
			md, _ := m.Metadata()
			if id == "" && md != nil {
				id = fmt.Sprintf("stream-%d", md.Sequence.Stream)
			}
			source := strings.TrimPrefix(m.Subject(), agent.SubjectEventsPrefix)
			n := 0
			agent.Unpack(hdr.Get(agent.BatchHeader) == "1", id, m.Data(), func(eid string, ev []byte) {
				if eid == "" { // a malformed batch line: stored as it came, under an ID of its position
					eid = fmt.Sprintf("%s/%d", id, n)
				}
				n++
				in := Incoming{Source: source, MsgID: eid, Data: ev}
				in.index()
				r.in = append(r.in, in)
			})
		}
		select {
		case out <- r:
		case <-ctx.Done():
			return
		}
	}
}

// checkpoint signs and stores the current tree head when it grew.
func (c *Collector) checkpoint(ctx context.Context) error {
	if c.tree.size == c.signed {
		return nil
	}
	cp := Checkpoint{Origin: c.cfg.Origin, Size: c.tree.size, Root: c.tree.root()}
	note := SignNote(cp.Text(), c.cfg.Origin, c.cfg.Key)
	if err := c.cfg.Store.AddCheckpoint(ctx, cp.Size, note, c.cfg.Now()); err != nil {
		return err
	}
	c.signed = c.tree.size
	return nil
}

// LoadOrCreateKey reads the checkpoint signing key from path (PEM, mode
// 0600), creating it on first use. Keep it outside the database: whoever
// can write the database must not be able to sign.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		block := pem.EncodeToMemory(&pem.Block{Type: "WARD AUDIT CHECKPOINT KEY", Bytes: priv.Seed()})
		if err := os.WriteFile(path, block, 0o600); err != nil {
			return nil, fmt.Errorf("collector: write key: %w", err)
		}
		return priv, nil
	}
	if err != nil {
		return nil, fmt.Errorf("collector: read key: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "WARD AUDIT CHECKPOINT KEY" || len(b.Bytes) != ed25519.SeedSize {
		return nil, fmt.Errorf("collector: %s is not a checkpoint key", path)
	}
	return ed25519.NewKeyFromSeed(b.Bytes), nil
}
