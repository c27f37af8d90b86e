package collector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/audit/agent"
	"github.com/wardsec/ward/internal/audit/redact"
	"github.com/wardsec/ward/internal/bus"
)

// pipeline is file → agent → embedded NATS JetStream → collector → SQLite.
type pipeline struct {
	t     testing.TB
	dir   string // audit files
	js    jetstream.JetStream
	store *Store
	key   ed25519.PrivateKey
	col   *Collector
	stop  context.CancelFunc
	done  chan struct{}
}

func newPipeline(t testing.TB) *pipeline {
	t.Helper()
	return newPipelineOn(t, filepath.Join(t.TempDir(), "audit.db"))
}

// newPipelineOn is newPipeline with the collector's database at dsn.
func newPipelineOn(t testing.TB, dsn string) *pipeline {
	t.Helper()
	srv, err := bus.StartEmbedded(bus.EmbeddedConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.EnsureStream(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	p := &pipeline{t: t, dir: t.TempDir(), js: js, store: st, key: key}
	p.startCollector()
	return p
}

func (p *pipeline) startCollector() {
	p.t.Helper()
	c, err := New(context.Background(), Config{Store: p.store, JS: p.js, Origin: "ward.test/audit", Key: p.key, CheckpointEvery: 50 * time.Millisecond})
	if err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.col, p.stop, p.done = c, cancel, make(chan struct{})
	go func() { _ = c.Run(ctx); close(p.done) }()
	p.t.Cleanup(p.stopCollector)
}

func (p *pipeline) stopCollector() {
	if p.stop != nil {
		p.stop()
		<-p.done
		p.stop = nil
	}
}

func (p *pipeline) newAgent(state string) *agent.Agent {
	p.t.Helper()
	r, _ := redact.New(redact.Config{})
	a, err := agent.New(agent.Config{Dir: p.dir, StateFile: state, Publisher: &agent.JetStream{JS: p.js}, Host: "host-1",
		Container: "c-9", Redactor: r, Poll: 20 * time.Millisecond, PartialGrace: 100 * time.Millisecond})
	if err != nil {
		p.t.Fatal(err)
	}
	return a
}

func (p *pipeline) waitStored(n int64) {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := p.store.Count(context.Background())
		if err != nil {
			p.t.Fatal(err)
		}
		if got == n {
			return
		}
		if got > n {
			p.t.Fatalf("%d events stored, want %d", got, n)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%d events stored after 20 s, want %d", got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPipelineExactlyOnceAndTamperEvidence(t *testing.T) {
	p := newPipeline(t)
	w, err := audit.NewWriter(audit.Config{Dir: p.dir, Service: "orders", MaxFileBytes: 8 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const n = 600
	for i := range n {
		w.Write(audit.Event{Kind: audit.KindDecision, CorrelationID: fmt.Sprintf("cid-%d", i%7), Caller: "spiffe://ward.test/svc/web",
			User: "alice", Decision: audit.Allow, Reason: "card 4111 1111 1111 1111 of bob@example.com"})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Garbage, a partial line and an oversized line are written too.
	f, _ := os.OpenFile(filepath.Join(p.dir, "legacy.audit.jsonl"), os.O_CREATE|os.O_WRONLY, 0o600)
	f.WriteString("not json at all\n\x00\xff\xfe binary\n" + strings.Repeat("z", audit.MaxLineSize+10) + "\n{\"v\":1,\"kind\":\"x\",\"time\":\"2026-01-01T00:00:00Z\"}\n{\"partial")
	f.Close()
	want := int64(n) + 4 // 600 events, 2 raw lines, 1 too-large marker, 1 event; the partial line waits

	state := filepath.Join(t.TempDir(), "state.json")
	ctx, cancel := context.WithCancel(context.Background())
	a := p.newAgent(state)
	adone := make(chan struct{})
	go func() { _ = a.Run(ctx); close(adone) }()
	p.waitStored(want)
	cancel()
	<-adone

	// An agent that lost its checkpoints ships everything again: the
	// broker and the collector store nothing twice.
	os.Remove(state)
	ctx, cancel = context.WithCancel(context.Background())
	a2 := p.newAgent(state)
	go func() { _ = a2.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	// (The partial line keeps 9 bytes of lag: wait for everything else.)
	for a2.Stats().Published < uint64(want) {
		if time.Now().After(deadline) {
			t.Fatalf("second agent did not catch up: %+v", a2.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	p.waitStored(want)

	// The collector restarts and goes on.
	p.stopCollector()
	p.startCollector()
	w2, _ := audit.NewWriter(audit.Config{Dir: p.dir, Service: "orders"})
	w2.Write(audit.Event{Kind: audit.KindDecision, CorrelationID: "after-restart"})
	w2.Close()
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.newAgent(state).Run(ctx) }()
	p.waitStored(want + 1)
	time.Sleep(150 * time.Millisecond) // a checkpoint covers it
	p.stopCollector()

	// Nothing sensitive was stored; context was added.
	rows, err := p.store.Find(context.Background(), Query{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, r := range rows {
		s := string(r.Event)
		if strings.Contains(s, "4111 1111") || strings.Contains(s, "bob@example.com") {
			t.Fatalf("sensitive data stored: %s", s)
		}
		var e audit.Event
		_ = json.Unmarshal(r.Event, &e)
		kinds[e.Kind]++
		if e.Host != "host-1" || e.Extra["container"] != "c-9" {
			t.Fatalf("no host context: %s", s)
		}
	}
	if kinds[audit.KindRaw] != 2 || kinds[audit.KindTooLarge] != 1 || kinds[audit.KindDecision] != n+1 {
		t.Fatalf("kinds %v", kinds)
	}
	// Correlation queries return the trail in order.
	trail, _ := p.store.Find(context.Background(), Query{CorrelationID: "cid-3"})
	if len(trail) == 0 || len(trail) > n/7+1 {
		t.Fatalf("trail of cid-3: %d events", len(trail))
	}

	vk := VerifierKey("ward.test/audit", p.key.Public().(ed25519.PublicKey))
	res, err := p.store.Verify(context.Background(), vk)
	if err != nil || res.Broken != "" || res.Events != want+1 || res.Checkpoints == 0 {
		t.Fatalf("verify: %+v %v", res, err)
	}
	// Edit one stored event: verify names it.
	if _, err := p.store.db.Exec(`UPDATE events SET data = replace(data, 'alice', 'mallory') WHERE id = 42`); err != nil {
		t.Fatal(err)
	}
	res, err = p.store.Verify(context.Background(), vk)
	if err != nil || !strings.Contains(res.Broken, "event 42 ") {
		t.Fatalf("tampered store verified: %+v %v", res, err)
	}
	// A forger who also rewrites the hash chain is caught by the signed root.
	var prev []byte
	rowsq, _ := p.store.db.Query(`SELECT id, source, seq, msg_id, data FROM events ORDER BY id`)
	type rec struct {
		id, seq       int64
		source, msgID string
		data          []byte
	}
	var recs []rec
	for rowsq.Next() {
		var r rec
		rowsq.Scan(&r.id, &r.source, &r.seq, &r.msgID, &r.data)
		recs = append(recs, r)
	}
	rowsq.Close()
	prev = make([]byte, 32)
	for _, r := range recs {
		h := chainHash(prev, r.source, r.seq, r.msgID, r.data)
		p.store.db.Exec(`UPDATE events SET prev = ?, hash = ? WHERE id = ?`, prev, h, r.id)
		prev = h
	}
	res, _ = p.store.Verify(context.Background(), vk)
	if !strings.Contains(res.Broken, "checkpoint") {
		t.Fatalf("rewritten chain verified: %+v", res)
	}
	// Another key does not verify the checkpoints.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if res, err := p.store.Verify(context.Background(), VerifierKey("ward.test/audit", other.Public().(ed25519.PublicKey))); res.Broken == "" {
		t.Fatalf("checkpoints verified with another key: %+v %v", res, err)
	}
}

func TestMerkleRoot(t *testing.T) {
	// RFC 6962 MTH by its recursive definition, against the incremental tree.
	var mth func(leaves [][]byte) [32]byte
	mth = func(leaves [][]byte) [32]byte {
		if len(leaves) == 1 {
			return leafHash(leaves[0])
		}
		k := 1
		for k*2 < len(leaves) {
			k *= 2
		}
		return nodeHash(mth(leaves[:k]), mth(leaves[k:]))
	}
	var tr tree
	var leaves [][]byte
	for i := range 70 {
		h := []byte(fmt.Sprintf("leaf-%d", i))
		leaves = append(leaves, h)
		tr.append(h)
		if tr.root() != mth(leaves) {
			t.Fatalf("root differs at size %d", i+1)
		}
	}
}

func TestNote(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	cp := Checkpoint{Origin: "ward.test/audit", Size: 12}
	cp.Root[0] = 7
	note := SignNote(cp.Text(), "ward.test/audit", priv)
	got, err := OpenNote(note, "ward.test/audit", pub)
	if err != nil || got != cp {
		t.Fatalf("%+v %v", got, err)
	}
	name, p2, err := ParseVerifierKey(VerifierKey("ward.test/audit", pub))
	if err != nil || name != "ward.test/audit" || !p2.Equal(pub) {
		t.Fatal(err)
	}
	for _, bad := range []string{strings.Replace(note, "12", "13", 1), note[:len(note)-5] + "AAAA\n", "x", ""} {
		if _, err := OpenNote(bad, "ward.test/audit", pub); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
