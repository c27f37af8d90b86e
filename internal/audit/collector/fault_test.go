package collector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/audit/agent"
	"github.com/wardsec/ward/internal/audit/redact"
	"github.com/wardsec/ward/internal/bus"
)

// TestHelperAgent is not a test: it is the agent process that
// TestFaults starts and kills (the test binary re-executed).
func TestHelperAgent(t *testing.T) {
	url, dir := os.Getenv("WARD_HELPER_NATS"), os.Getenv("WARD_HELPER_DIR")
	if url == "" || dir == "" {
		t.Skip("helper process for TestFaults")
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		os.Exit(3)
	}
	js, _ := jetstream.New(nc)
	r, _ := redact.New(redact.Config{})
	a, err := agent.New(agent.Config{Dir: dir, StateFile: filepath.Join(dir, "state.json"), Publisher: &agent.JetStream{JS: js, Timeout: 2 * time.Second},
		Host: "fault-host", Redactor: r, Poll: 10 * time.Millisecond})
	if err != nil {
		os.Exit(4)
	}
	_ = a.Run(context.Background()) // until killed
}

// TestFaults writes a known number of events while the agent is killed
// with SIGKILL (several times), the broker restarts and the collector
// restarts; at the end every event is stored exactly once and the trail
// verifies.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	storeDir := t.TempDir()
	// A fixed port, so the restarted broker is found again.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	startBroker := func() *bus.Server {
		t.Helper()
		var srv *bus.Server
		var err error
		for range 50 { // the port may linger briefly after a shutdown
			if srv, err = bus.StartEmbedded(bus.EmbeddedConfig{Port: port, StoreDir: storeDir}); err == nil {
				return srv
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
		return nil
	}
	broker := startBroker()
	defer func() { broker.Shutdown() }()
	url := broker.ClientURL()

	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := agent.EnsureStream(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	st, err := OpenStore(context.Background(), filepath.Join(t.TempDir(), "audit.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	var stopCol func()
	startCollector := func() {
		c, err := New(context.Background(), Config{Store: st, JS: js, Origin: "ward.test/audit", Key: key, CheckpointEvery: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = c.Run(ctx); close(done) }()
		stopCol = func() { cancel(); <-done }
	}
	startCollector()

	dir := t.TempDir()
	startAgent := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAgent$")
		cmd.Env = append(os.Environ(), "WARD_HELPER_NATS="+url, "WARD_HELPER_DIR="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_, _ = cmd.Process.Wait()
	}
	ag := startAgent()

	// The writer: N events, rotating files, while faults happen.
	const n = 3000
	w, err := audit.NewWriter(audit.Config{Dir: dir, Service: "svc", MaxFileBytes: 32 << 10, MaxRotated: 10000, MaxWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		w.Write(audit.Event{Kind: audit.KindDecision, CorrelationID: strconv.Itoa(i), Extra: map[string]any{"i": i}})
		switch i {
		case 500, 1500, 2500:
			time.Sleep(50 * time.Millisecond)
			kill(ag) // SIGKILL mid-flight
			ag = startAgent()
		case 1000:
			broker.Shutdown()
			time.Sleep(300 * time.Millisecond)
			broker = startBroker()
		case 2000:
			stopCol()
			time.Sleep(100 * time.Millisecond)
			startCollector()
		}
		if i%100 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := w.Close(); err != nil || w.Dropped() != 0 {
		t.Fatalf("writer: %v, %d dropped", err, w.Dropped())
	}
	defer func() { kill(ag) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		c, _ := st.Count(context.Background())
		if c >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events stored after 60 s", c, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // duplicates, if any, would arrive now; a checkpoint covers the end
	stopCol()
	rows, err := st.Find(context.Background(), Query{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for _, r := range rows {
		var e audit.Event
		if err := json.Unmarshal(r.Event, &e); err != nil || e.Kind != audit.KindDecision {
			t.Fatalf("unexpected event %s", r.Event)
		}
		seen[int(e.Extra["i"].(float64))]++
	}
	for i := range n {
		if seen[i] != 1 {
			t.Fatalf("event %d stored %d times (of %d rows)", i, seen[i], len(rows))
		}
	}
	if len(rows) != n {
		t.Fatalf("%d rows for %d events", len(rows), n)
	}
	res, err := st.Verify(context.Background(), VerifierKey("ward.test/audit", key.Public().(ed25519.PublicKey)))
	if err != nil || res.Broken != "" || res.Events != n {
		t.Fatalf("verify: %+v %v", res, err)
	}
	t.Logf("%d events stored exactly once through 3 SIGKILLs, a broker restart and a collector restart; %d checkpoints verify", n, res.Checkpoints)
	_ = fmt.Sprint
}
