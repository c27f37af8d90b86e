package agent

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/audit/redact"
)

var fastCorpus = []string{
	`{"v":1,"time":"2026-11-24T03:40:28.123456789Z","service":"orders","kind":"authz.decision","caller":"spiffe://ward.test/svc/web","user":"alice","decision":"allow"}`,
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","reason":"card 4111 1111 1111 1111 of bob@example.com","host":"h1"}`,
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","extra":{"password":"hunter2","Api-Key":"x","nested":{"token":{"a":1},"list":["bob@example.com",4111111111111111,{"secret":""}]},"n":12,"ok":true,"nil":null}}`,
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","user":"Bearer abcdefghijklmnop","credential_fp":"0123456789abcdef","cid":"4bf92f3577b34da6a3ce929d0e0e4736"}`,
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","extra":{"jwt":"eyJhbGciOi.eyJzdWIiOi.sig","ssn":"123-45-6789","text":"ssn 123-45-6789"}}`,
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","extra":{}}`,
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","unknown":"x"}`,  // slow path
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","kind":"again"}`, // slow path
	`{"v":1,"Time":"2026-11-24T03:40:28Z","kind":"k"}`,                // slow path
	`{"v":2,"time":"2026-11-24T03:40:28Z","kind":"k"}`,                // raw
	`{"v":1,"time":"not a time","kind":"k"}`,                          // raw
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","extra":null}`,   // slow path
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","service":7}`,    // raw
	`{"v":1,"time":"2026-11-24T03:40:28Z","kind":"k","extra":{"x":"\u003cb\u003e \u00e9 \ud83d\ude00"}}`,
	`not json`,
}

func newTestAgent(t testing.TB, container string) *Agent {
	t.Helper()
	r, err := redact.New(redact.Config{Fields: []string{"internal_note"}, Patterns: []string{`ACME-\d{6}`}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Dir: t.TempDir(), Publisher: &memPub{}, Redactor: r, Host: "host-a", Container: container})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// sameEvent compares what two prepared lines decode to.
func sameEvent(t testing.TB, fast, slow []byte) {
	t.Helper()
	ef, err1 := audit.ParseLine(fast)
	es, err2 := audit.ParseLine(slow)
	if (err1 == nil) != (err2 == nil) {
		t.Fatalf("fast %s (%v)\nslow %s (%v)", fast, err1, slow, err2)
	}
	if !ef.Time.Equal(es.Time) {
		t.Fatalf("time: fast %s, slow %s", fast, slow)
	}
	ef.Time = es.Time
	jf, _ := json.Marshal(ef)
	js, _ := json.Marshal(es)
	if !bytes.Equal(jf, js) {
		var mf, ms any
		_ = json.Unmarshal(jf, &mf)
		_ = json.Unmarshal(js, &ms)
		if !reflect.DeepEqual(mf, ms) {
			t.Fatalf("fast %s\nslow %s", fast, slow)
		}
	}
}

// TestFastPathMatchesSlowPath: for every line the fast path takes, it
// ships what the general path would.
func TestFastPathMatchesSlowPath(t *testing.T) {
	for _, container := range []string{"", "c-1"} {
		a := newTestAgent(t, container)
		taken := 0
		for _, line := range fastCorpus {
			fast, ok := a.prepareFast([]byte(line))
			if !ok {
				continue
			}
			taken++
			sameEvent(t, fast, a.prepareSlow([]byte(line)))
			for _, leak := range []string{"4111", "bob@example.com", "hunter2", "abcdefghijklmnop", "123-45-6789", "eyJhbGciOi"} {
				if bytes.Contains(fast, []byte(leak)) {
					t.Fatalf("%q leaked: %s", leak, fast)
				}
			}
		}
		if taken != 6 {
			t.Fatalf("the fast path took %d lines, want 6", taken)
		}
	}
}

func FuzzFastPath(f *testing.F) {
	for _, l := range fastCorpus {
		f.Add([]byte(l))
	}
	a := newTestAgent(f, "c")
	f.Fuzz(func(t *testing.T, line []byte) {
		fast, ok := a.prepareFast(line)
		if !ok {
			return
		}
		slow := a.prepareSlow(line)
		// Numbers beyond float64's exact range decode differently on the
		// general path (through float64): not compared.
		var probe map[string]any
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		if d.Decode(&probe) == nil && hasBigNumber(probe) {
			return
		}
		sameEvent(t, fast, slow)
	})
}

func hasBigNumber(v any) bool {
	switch t := v.(type) {
	case json.Number:
		return len(t.String()) > 15
	case map[string]any:
		for _, x := range t {
			if hasBigNumber(x) {
				return true
			}
		}
	case []any:
		for _, x := range t {
			if hasBigNumber(x) {
				return true
			}
		}
	}
	return false
}

func BenchmarkPrepare(b *testing.B) {
	a := newTestAgent(b, "")
	line := []byte(fastCorpus[0])
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.prepare(line)
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.prepareSlow(line)
		}
	})
}
