package identity

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/wardsec/ward/identity/internal/fakeauthority"
)

func TestParseWatchLine(t *testing.T) {
	t.Parallel()
	sig64 := make([]byte, ed25519.SignatureSize)
	line := func(v map[string]any) []byte { b, _ := json.Marshal(v); return b }
	tests := []struct {
		name string
		line []byte
		kind string
		ok   bool
	}{
		{name: "heartbeat", line: []byte(`{"seq":0,"kind":"heartbeat"}`), kind: kindHeartbeat, ok: true},
		{name: "signed std base64", line: line(map[string]any{"seq": 3, "kind": "revocation", "payload": []byte(`{}`), "sig": sig64}), kind: kindRevocation, ok: true},
		{name: "raw url base64", line: []byte(`{"seq":3,"kind":"bundle","payload":"e30","sig":"` + base64.RawURLEncoding.EncodeToString(sig64) + `"}`), kind: kindBundle, ok: true},
		{name: "unknown kind parses", line: line(map[string]any{"kind": "access_list", "payload": []byte(`{}`), "sig": sig64}), kind: "access_list", ok: true},
		{name: "missing kind", line: []byte(`{"seq":1}`)},
		{name: "missing payload", line: line(map[string]any{"kind": "revocation", "sig": sig64})},
		{name: "short sig", line: line(map[string]any{"kind": "revocation", "payload": []byte(`{}`), "sig": sig64[:10]})},
		{name: "negative seq", line: line(map[string]any{"seq": -1, "kind": "revocation", "payload": []byte(`{}`), "sig": sig64})},
		{name: "not json", line: []byte(`hello`)},
		{name: "array", line: []byte(`[1,2]`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := parseWatchLine(tc.line)
			if !tc.ok {
				if !errors.Is(err, errBadEvent) {
					t.Fatalf("got %v, want errBadEvent", err)
				}
				return
			}
			if err != nil || l.kind != tc.kind {
				t.Fatalf("got %+v, %v", l, err)
			}
		})
	}
}

func TestNormalizeSerial(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		ok       bool
	}{
		{in: "0aBc", want: "abc", ok: true},
		{in: "ff", want: "ff", ok: true},
		{in: "0", ok: false},
		{in: "-1", ok: false},
		{in: "0x10", ok: false},
		{in: "xyz", ok: false},
		{in: "", ok: false},
		{in: string(make([]byte, 65)), ok: false},
	}
	for _, tc := range tests {
		got, ok := normalizeSerial(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("normalizeSerial(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestApplyEvents drives handleLine directly: snapshot replaces the
// revoked set, "hello" is a snapshot, revocations accumulate, a bundle
// event with a stale bundle version is refused, unknown kinds are ignored.
func TestApplyEvents(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), false)
	key := fa.SigningKey()
	apply := func(seq int64, kind string, payload any) error {
		p, _ := json.Marshal(payload)
		_, err := src.handleLine(t.Context(), fakeauthority.SignLine(key, seq, kind, p))
		return err
	}
	mustApply := func(seq int64, kind string, payload any) {
		t.Helper()
		if err := apply(seq, kind, payload); err != nil {
			t.Fatalf("%s %d: %v", kind, seq, err)
		}
	}

	mustApply(5, "hello", map[string]any{"version": 5, "revoked_serials": []string{"0A", "b"}})
	if !src.Revoked(big.NewInt(10)) || !src.Revoked(big.NewInt(11)) {
		t.Fatal("hello snapshot not applied")
	}
	mustApply(6, "revocation", map[string]any{"version": 6, "serials": []string{"c"}})
	mustApply(7, "revocation", map[string]any{"serials": []string{"d"}}) // version from seq
	if !src.Revoked(big.NewInt(12)) || !src.Revoked(big.NewInt(13)) || !src.Revoked(big.NewInt(10)) {
		t.Fatal("revocations not accumulated")
	}
	if err := apply(7, "revocation", map[string]any{"serials": []string{"e"}}); !errors.Is(err, errRollback) {
		t.Fatalf("duplicate version: %v", err)
	}
	mustApply(8, "snapshot", map[string]any{"version": 8, "revoked_serials": []string{"e"}})
	if src.Revoked(big.NewInt(10)) || !src.Revoked(big.NewInt(14)) {
		t.Fatal("snapshot did not replace the revoked set")
	}
	cur := src.trust.Load().version
	if err := apply(9, "bundle", map[string]any{"version": 9, "bundle_version": cur, "bundle_pem": string(fa.BundlePEM())}); !errors.Is(err, errRollback) {
		t.Fatalf("stale bundle version: %v", err)
	}
	if err := apply(10, "bundle", map[string]any{"version": 10, "bundle_version": cur + 1, "bundle_pem": "junk"}); !errors.Is(err, errBadEvent) {
		t.Fatalf("bad bundle: %v", err)
	}
	mustApply(11, "access_list", map[string]any{"version": 11})
	if err := apply(12, "revocation", "not an object"); !errors.Is(err, errBadEvent) {
		t.Fatalf("bad payload: %v", err)
	}
}

// TestWatchReconnectsAfterSilence: a stream that goes quiet (no
// heartbeat) is dropped after the idle timeout and resumed.
func TestWatchReconnectsAfterSilence(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{Heartbeat: 50 * time.Millisecond})
	tune := fastTuning()
	tune.watchIdle = 300 * time.Millisecond
	src := newSourceT(t, sourceConfig(t, fa, webID), tune, true)
	eventually(t, 5*time.Second, "watch stream", func() bool { return fa.Stats().Watchers == 1 })
	first := fa.Stats().WatchConnects
	time.Sleep(500 * time.Millisecond) // heartbeats keep the stream alive
	if got := fa.Stats().WatchConnects; got != first {
		t.Fatalf("stream reconnected %d times although heartbeats flowed", got-first)
	}
	fa.SetSilent(true)
	serial := big.NewInt(777)
	fa.Revoke(serial) // swallowed by the silent stream
	eventually(t, 5*time.Second, "reconnect after silence", func() bool { return fa.Stats().WatchConnects > first })
	// The new stream's snapshot carries the revocation.
	fa.SetSilent(false)
	eventually(t, 5*time.Second, "revocation after resume", func() bool { return src.Revoked(serial) })
}

// TestWatchRetriesWhenRefused: the stream is retried with backoff while
// the authority refuses it.
func TestWatchRetriesWhenRefused(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{})
	fa.Fail("watch", 503)
	src := newSourceT(t, sourceConfig(t, fa, webID), fastTuning(), true)
	serial := big.NewInt(99)
	fa.Revoke(serial)
	time.Sleep(300 * time.Millisecond)
	if src.Revoked(serial) {
		t.Fatal("revocation arrived while the stream was refused")
	}
	fa.Fail("watch", 0)
	eventually(t, 5*time.Second, "revocation after the stream recovered", func() bool { return src.Revoked(serial) })
}

func FuzzParseWatchLine(f *testing.F) {
	sig := make([]byte, ed25519.SignatureSize)
	for _, payload := range []string{
		`{"version":3,"bundle_pem":"","bundle_version":1,"revoked_serials":["ab","00ff"]}`,
		`{"serials":["abc"],"reason":"keyCompromise","at":"2026-01-01T00:00:00Z","version":4}`,
		`{"bundle_pem":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n","bundle_version":2,"version":5}`,
	} {
		for _, kind := range []string{kindSnapshot, kindRevocation, kindBundle} {
			b, _ := json.Marshal(map[string]any{"seq": 1, "kind": kind, "payload": []byte(payload), "sig": sig})
			f.Add(b)
		}
	}
	f.Add([]byte(`{"seq":0,"kind":"heartbeat"}`))
	f.Add([]byte(`{"seq":1,"kind":"x","payload":"!!","sig":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := parseWatchLine(data)
		if err != nil {
			return
		}
		if l.kind == "" || l.seq < 0 {
			t.Fatalf("accepted %+v", l)
		}
		if l.kind != kindHeartbeat && (len(l.payload) == 0 || len(l.sig) != ed25519.SignatureSize) {
			t.Fatalf("accepted unsigned %s", l.kind)
		}
		// The payload parsers must not panic either.
		if sp, err := parseSnapshot(l.payload); err == nil {
			for _, s := range sp.RevokedSerials {
				if n, ok := normalizeSerial(s); ok && n == "" {
					t.Fatal("empty serial")
				}
			}
			_, _ = parseBundlePEM(td, []byte(sp.BundlePEM))
		}
		_, _ = parseRevocation(l.payload)
		if bp, err := parseBundleEvent(l.payload); err == nil {
			_, _ = parseBundlePEM(td, []byte(bp.BundlePEM))
		}
	})
}

// TestWatchFollowsCertificateLifetime: the authority ends a stream when
// the certificate that opened it expires; the Source reconnects at once
// with its current certificate, so revocations keep arriving within a
// second across those reconnects.
func TestWatchFollowsCertificateLifetime(t *testing.T) {
	t.Parallel()
	fa := startAuthority(t, fakeauthority.Options{SVIDTTL: 2 * time.Second})
	src := newSourceT(t, sourceConfig(t, fa, webID), defaultTuning(), true)
	eventually(t, 5*time.Second, "watch stream", func() bool { return fa.Stats().Watchers == 1 })
	deadline := time.Now().Add(5 * time.Second)
	for i := int64(1); time.Now().Before(deadline); i++ {
		serial := big.NewInt(1000 + i)
		start := time.Now()
		fa.Revoke(serial)
		eventually(t, time.Second, "revocation within 1 s", func() bool { return src.Revoked(serial) })
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Logf("revocation %d took %s", i, d)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if n := fa.Stats().WatchConnects; n < 2 {
		t.Fatalf("%d watch connections in 5 s of 2 s certificates, want ≥ 2", n)
	}
}
