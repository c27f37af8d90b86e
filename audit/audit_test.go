package audit

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func readEvents(t *testing.T, dir string) []Event {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dir, "*.audit.jsonl*"))
	var out []Event
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, MaxLineSize+1), MaxLineSize+1)
		for sc.Scan() {
			e, err := ParseLine(sc.Bytes())
			if err != nil {
				t.Fatalf("%s: %v: %q", p, err, sc.Text())
			}
			out = append(out, e)
		}
		f.Close()
	}
	return out
}

func TestWriterWritesAndRotates(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(Config{Dir: dir, Service: "orders", Instance: "i-1", MaxFileBytes: 4096, MaxRotated: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 250 {
				w.Write(Event{Kind: KindDecision, CorrelationID: "c", Caller: "spiffe://ward.test/svc/web", Decision: Allow, Extra: map[string]any{"g": g, "i": i}})
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	events := readEvents(t, dir)
	if len(events)+int(w.Dropped()) < 1000 || w.Written() != uint64(len(events)) {
		t.Fatalf("%d events read, %d written, %d dropped", len(events), w.Written(), w.Dropped())
	}
	rotated, _ := filepath.Glob(filepath.Join(dir, "orders.audit.jsonl.*"))
	if len(rotated) < 10 {
		t.Fatalf("only %d rotations for ~150 KiB at 4 KiB per file", len(rotated))
	}
	for _, e := range events {
		if e.Service != "orders" || e.Instance != "i-1" || e.V != SchemaVersion || e.Time.Location() != time.UTC {
			t.Fatalf("event %+v", e)
		}
	}
	// Closed: further events count as dropped, nothing panics.
	w.Write(Event{Kind: KindDecision})
	if w.Dropped() == 0 {
		t.Fatal("write after close not counted")
	}
}

// A writer that cannot keep up drops, counts and reports: never silently.
func TestWriterDropsAreReported(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(Config{Dir: dir, Service: "s", Buffer: 1, MaxWait: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	for range 20000 {
		w.Write(Event{Kind: KindDecision, Reason: strings.Repeat("x", 200)})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Dropped() == 0 {
		t.Skip("the disk kept up with a one-event buffer; nothing to report")
	}
	var reported float64
	for _, e := range readEvents(t, dir) {
		if e.Kind == KindDropped {
			reported += e.Extra["dropped"].(float64)
		}
	}
	// Drops after the last report (at Close) may not be reported.
	if reported == 0 || reported > float64(w.Dropped()) {
		t.Fatalf("reported %v drops of %d", reported, w.Dropped())
	}
}

func TestRotationKeepsMaxRotated(t *testing.T) {
	dir := t.TempDir()
	w, _ := NewWriter(Config{Dir: dir, Service: "s", MaxFileBytes: 300, MaxRotated: 3})
	for range 200 {
		w.Write(Event{Kind: KindDecision, Reason: strings.Repeat("y", 100)})
	}
	w.Close()
	rotated, _ := filepath.Glob(filepath.Join(dir, "s.audit.jsonl.*"))
	if len(rotated) > 3 {
		t.Fatalf("%d rotated files kept, max 3", len(rotated))
	}
}

func TestNilWriterAndEnv(t *testing.T) {
	var w *Writer
	w.Write(Event{Kind: KindDecision})
	if w.Close() != nil || w.Dropped() != 0 {
		t.Fatal("nil writer")
	}
	t.Setenv("WARD_AUDIT_DIR", "")
	if w, err := FromEnv("x"); w != nil || err != nil {
		t.Fatal("FromEnv without WARD_AUDIT_DIR")
	}
	t.Setenv("WARD_AUDIT_DIR", t.TempDir())
	w, err := FromEnv("x")
	if err != nil || w == nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := NewWriter(Config{Dir: t.TempDir(), Service: "../x"}); err == nil {
		t.Fatal("path in service name accepted")
	}
}

func TestParseLine(t *testing.T) {
	for _, bad := range []string{"", "{", "[]", "not json", `{"v":2,"kind":"x","time":"2026-01-01T00:00:00Z"}`, `{"v":1,"time":"2026-01-01T00:00:00Z"}`, `{"v":1,"kind":"x"}`, "\x00\xff"} {
		if _, err := ParseLine([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if _, err := ParseLine([]byte(strings.Repeat(" ", MaxLineSize+1))); err != ErrLineTooLarge {
		t.Errorf("oversized: %v", err)
	}
	e, err := ParseLine([]byte(`{"v":1,"kind":"authz.decision","time":"2026-01-01T00:00:00Z","cid":"c1","extra":{"k":1}}`))
	if err != nil || e.CorrelationID != "c1" || e.Extra["k"] != float64(1) {
		t.Fatalf("%+v %v", e, err)
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add([]byte(`{"v":1,"kind":"authz.decision","time":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"v":1,"kind":"x","time":"bad"}`))
	f.Add([]byte("\x00{"))
	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := ParseLine(line)
		if err == nil && (e.Kind == "" || e.V != SchemaVersion || e.Time.IsZero()) {
			t.Fatalf("accepted %q as %+v", line, e)
		}
	})
}
