package authority

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestWatchAccess(t *testing.T) {
	e := newEnv(t, withTunables(func(tu *tunables) { tu.maxWatchers = 1 }))
	token := e.createService("shop", "web", "L2")
	s := e.fetch(token)

	_, err := e.watch(e.client(nil), "")
	var se *statusError
	if !errors.As(err, &se) {
		t.Fatalf("watch without a certificate: %v", err)
	}
	wantProblem(t, se.resp, se.body, 401, slugUnauthorized)

	_, err = e.watch(e.client(s.tlsCert()), "-1")
	if !errors.As(err, &se) {
		t.Fatalf("watch with bad since: %v", err)
	}
	wantProblem(t, se.resp, se.body, 400, slugInvalidRequest)

	ws, err := e.watch(e.client(s.tlsCert()), "0")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.close()
	ws.next(t, 5*time.Second)
	_, err = e.watch(e.client(s.tlsCert()), "")
	if !errors.As(err, &se) {
		t.Fatalf("watch over the limit: %v", err)
	}
	wantProblem(t, se.resp, se.body, 503, slugTooManyWatchers)
	if got := e.a.hub.count(); got != 1 {
		t.Fatalf("watchers %d", got)
	}
	ws.close()
	waitFor(t, 5*time.Second, "watcher removal", func() bool { return e.a.hub.count() == 0 })
}

func TestWatchHeartbeatAndOwnRevocation(t *testing.T) {
	e := newEnv(t, withTunables(func(tu *tunables) { tu.heartbeat = 30 * time.Millisecond }))
	s := e.fetch(e.createService("shop", "web", "L2"))
	ws, err := e.watch(e.client(s.tlsCert()), "")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.close()
	if ev := ws.next(t, 5*time.Second); ev.Kind != kindSnapshot {
		t.Fatalf("first %s", ev.Kind)
	}
	select {
	case ev := <-ws.events:
		if ev.Kind != kindHeartbeat || ev.Seq != 0 || ev.Payload != nil || ev.Sig != nil {
			t.Fatalf("heartbeat %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat")
	}

	// Revoking the watcher's own certificate delivers the event, then
	// ends the stream.
	e.admin("POST", "/v1/svids/"+s.serial()+"/revoke", nil, http.StatusOK, nil)
	if ev := ws.next(t, 2*time.Second); ev.Kind != kindRevocation {
		t.Fatalf("event %s", ev.Kind)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ws.events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("stream of a revoked certificate not ended")
		}
	}
}

// TestSlowWatcherDropped checks that fan-out never blocks: a watcher that
// does not drain its queue is disconnected while others get every event.
func TestSlowWatcherDropped(t *testing.T) {
	e := newEnv(t, withTunables(func(tu *tunables) { tu.watcherBuffer = 4 }))
	h := e.a.hub
	slow, err := h.add("slow", "")
	if err != nil {
		t.Fatal(err)
	}
	fast, err := h.add("fast", "")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := int64(1); i <= 50; i++ {
		h.broadcast(e.a, 1000+i, kindRevocation, []byte(`{"serials":[],"reason":"unspecified","at":"2026-01-01T00:00:00Z"}`), nil, "")
		select {
		case it := <-fast.ch:
			if it.seq != 1000+i {
				t.Fatalf("fast watcher got %d, want %d", it.seq, 1000+i)
			}
		case <-fast.done:
			t.Fatalf("fast watcher dropped at event %d", i)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("broadcast blocked for %v", d)
	}
	select {
	case <-slow.done:
		if slow.reason != "slow" {
			t.Fatalf("reason %q", slow.reason)
		}
	default:
		t.Fatal("slow watcher still connected")
	}
	h.remove(fast)
	if n := h.count(); n != 0 {
		t.Fatalf("watchers left: %d", n)
	}
}

func TestCloseEndsWatchers(t *testing.T) {
	e := newEnv(t)
	w, err := e.a.hub.add("x", "")
	if err != nil {
		t.Fatal(err)
	}
	e.a.hub.closeAll()
	select {
	case <-w.done:
	default:
		t.Fatal("watcher not ended")
	}
	if _, err := e.a.hub.add("y", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("add after close: %v", err)
	}
}
