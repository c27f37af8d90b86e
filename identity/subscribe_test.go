package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

// event is one payload received by a subscriber.
type event struct {
	kind    string
	payload map[string]any
}

// recorder collects the events a subscriber receives.
type recorder struct {
	mu     sync.Mutex
	events []event
	raw    [][]byte
}

func (r *recorder) fn(kind string, payload []byte) {
	var p map[string]any
	_ = json.Unmarshal(payload, &p)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, event{kind: kind, payload: p})
	r.raw = append(r.raw, payload)
}

func (r *recorder) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.kind
	}
	return out
}

func (r *recorder) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events...)
}

// runSource starts Run on src and stops it at cleanup.
func runSource(t *testing.T, src *Source) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- src.Run(context.Background()) }()
	t.Cleanup(func() {
		_ = src.Close()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestSubscribe follows a real stream: the subscriber sees the snapshot
// (with members identity does not know), then every event in stream
// order, each after identity applied it.
func TestSubscribe(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	fa.SetSnapshotField("access_list_version", 3)
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), false)
	var rec recorder
	serial := big.NewInt(4242)
	var revokedWhenSeen bool
	unsubscribe := src.Subscribe(func(kind string, payload []byte) {
		if kind == kindRevocation {
			revokedWhenSeen = src.Revoked(serial) // applied before delivery
		}
		rec.fn(kind, payload)
	})
	defer unsubscribe()
	runSource(t, src)
	eventually(t, 5*time.Second, "snapshot", func() bool { return len(rec.kinds()) == 1 })

	listSeq := fa.Emit("accesslist", map[string]any{"provider": webID.String(), "list_version": 4})
	fa.Revoke(serial)
	fa.PublishBundle(fa.Roots()...)
	eventually(t, 5*time.Second, "three events", func() bool { return len(rec.kinds()) == 4 })

	got := rec.snapshot()
	want := []string{kindSnapshot, "accesslist", kindRevocation, kindBundle}
	for i, e := range got {
		if e.kind != want[i] {
			t.Fatalf("event %d: kind %q, want %q (all: %v)", i, e.kind, want[i], rec.kinds())
		}
	}
	if v := got[0].payload["access_list_version"]; v != float64(3) {
		t.Errorf("snapshot access_list_version = %v, want 3", v)
	}
	if p := got[1].payload; p["provider"] != webID.String() || p["list_version"] != float64(4) || p["version"] != float64(listSeq) {
		t.Errorf("accesslist payload = %v", p)
	}
	if !revokedWhenSeen {
		t.Error("revocation delivered before it was applied")
	}
}

// TestSubscribeDelivery drives handleLine directly: only verified and
// applied payloads are passed on, hello is passed on as snapshot, every
// subscriber gets its own copy, and unsubscribe is idempotent.
func TestSubscribeDelivery(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), false)
	key := fa.SigningKey()
	_, forger, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var first, second recorder
	src.Subscribe(func(kind string, payload []byte) {
		first.fn(kind, payload)
		for i := range payload {
			payload[i] = 'x' // must not reach the other subscriber
		}
	})
	unsubscribe := src.Subscribe(second.fn)
	if u := src.Subscribe(nil); u == nil {
		t.Fatal("Subscribe(nil) returned a nil unsubscribe")
	} else {
		u()
		u()
	}

	tests := []struct {
		name string
		line []byte
		want string // kind passed on, "" for none
	}{
		{name: "hello is a snapshot", line: signed(key, 5, kindHello, `{"version":5,"revoked_serials":[]}`), want: kindSnapshot},
		{name: "revocation", line: signed(key, 6, kindRevocation, `{"version":6,"serials":["a"]}`), want: kindRevocation},
		{name: "revocation rollback", line: signed(key, 6, kindRevocation, `{"version":6,"serials":["b"]}`)},
		{name: "malformed revocation", line: signed(key, 7, kindRevocation, `[]`)},
		{name: "unknown kind", line: signed(key, 8, "accesslist", `{"version":8,"provider":"spiffe://ward.test/svc/web","list_version":2}`), want: "accesslist"},
		{name: "forged unknown kind", line: signed(forger, 9, "accesslist", `{"version":9,"provider":"spiffe://ward.test/svc/web","list_version":99}`)},
		{name: "heartbeat", line: []byte(`{"seq":0,"kind":"heartbeat"}`)},
		{name: "snapshot rollback", line: signed(key, 1, kindSnapshot, `{"version":1}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(second.kinds())
			_, _ = src.handleLine(t.Context(), tc.line)
			kinds := second.kinds()
			switch {
			case tc.want == "" && len(kinds) != before:
				t.Fatalf("passed on as %q", kinds[len(kinds)-1])
			case tc.want != "" && (len(kinds) != before+1 || kinds[before] != tc.want):
				t.Fatalf("passed on %v, want one %q", kinds[before:], tc.want)
			}
		})
	}
	for i, raw := range second.raw {
		if raw[0] != '{' {
			t.Errorf("payload %d was modified by another subscriber: %q", i, raw)
		}
	}
	if n, m := len(first.kinds()), len(second.kinds()); n != m {
		t.Errorf("subscribers saw %d and %d events", n, m)
	}

	unsubscribe()
	unsubscribe()
	if _, err := src.handleLine(t.Context(), signed(key, 10, "accesslist", `{"version":10}`)); err != nil {
		t.Fatal(err)
	}
	if n, m := len(first.kinds()), len(second.kinds()); n != m+1 {
		t.Errorf("after unsubscribe: first saw %d, second %d events; want second to stop", n, m)
	}
}

func signed(key ed25519.PrivateKey, seq int64, kind, payload string) []byte {
	return fakeauthority.SignLine(key, seq, kind, []byte(payload))
}

func TestAuthorityURL(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	cfg := sourceConfig(t, fa, webID)
	cfg.AuthorityURL = fa.URL() + "/"
	src := newSourceT(t, cfg, fastTuning(), false)
	if got := src.AuthorityURL(); got != fa.URL() {
		t.Fatalf("AuthorityURL() = %q, want %q", got, fa.URL())
	}
}
