package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/audit/redact"
)

// memPub records what is published; fail makes the next batches fail.
type memPub struct {
	mu   sync.Mutex
	ids  map[string]int
	msgs []Msg
	fail int
}

func (p *memPub) PublishBatch(_ context.Context, msgs []Msg) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail > 0 {
		p.fail--
		return errors.New("broker gone")
	}
	for _, m := range msgs {
		if p.ids[m.ID] > 0 {
			p.ids[m.ID]++ // a duplicate the broker would drop
			continue
		}
		p.ids[m.ID] = 1
		p.msgs = append(p.msgs, m)
	}
	return nil
}

func (p *memPub) Publish(context.Context, string, []byte) error { return nil }

func (p *memPub) kinds() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for _, m := range p.msgs {
		var e audit.Event
		_ = json.Unmarshal(m.Data, &e)
		out[e.Kind+":"+e.Reason]++
	}
	return out
}

func line(reason string) string {
	return `{"v":1,"kind":"k","time":"2026-11-24T00:00:00Z","reason":"` + reason + `"}` + "\n"
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(s)
	f.Close()
}

func newAgent(t *testing.T, dir string, p Publisher) *Agent {
	t.Helper()
	r, _ := redact.New(redact.Config{})
	a, err := New(Config{Dir: dir, Publisher: p, Host: "h", Redactor: r})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestRotationTruncationDeletionAndFailures(t *testing.T) {
	dir := t.TempDir()
	p := &memPub{ids: map[string]int{}}
	a := newAgent(t, dir, p)
	ctx := context.Background()
	active := filepath.Join(dir, "svc.audit.jsonl")
	appendFile(t, active, line("a1")+line("a2"))
	if err := a.Once(ctx); err != nil {
		t.Fatal(err)
	}
	// Rotation: the old file gets one more line before it is renamed,
	// the new one starts.
	appendFile(t, active, line("a3"))
	if err := os.Rename(active, active+".100"); err != nil {
		t.Fatal(err)
	}
	appendFile(t, active, line("b1"))
	// The broker refuses once: nothing is checkpointed, the retry ships it.
	p.fail = 1
	if err := a.Once(ctx); err == nil {
		t.Fatal("a failed publish was not reported")
	}
	if err := a.Once(ctx); err != nil {
		t.Fatal(err)
	}
	// Truncation: the file is read again from the start, as new lines.
	if err := os.Truncate(active, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, active, line("c1"))
	if err := a.Once(ctx); err != nil {
		t.Fatal(err)
	}
	// Deletion under the agent.
	os.Remove(active + ".100")
	if err := a.Once(ctx); err != nil {
		t.Fatal(err)
	}
	k := p.kinds()
	for _, r := range []string{"a1", "a2", "a3", "b1", "c1"} {
		if k["k:"+r] != 1 {
			t.Errorf("%s shipped %d times: %v", r, k["k:"+r], k)
		}
	}
	if len(p.msgs) != 5 {
		t.Fatalf("%d messages: %v", len(p.msgs), k)
	}
	// A restarted agent resumes from the checkpoint: nothing again.
	before := len(p.msgs)
	a2 := newAgent(t, dir, p)
	appendFile(t, active, line("d1"))
	if err := a2.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if len(p.msgs) != before+1 {
		t.Fatalf("restart shipped %d messages, want 1", len(p.msgs)-before)
	}
	for id, n := range p.ids {
		if n > 1 {
			t.Errorf("message %s published %d times", id, n)
		}
	}
}

func TestOversizedAndGarbage(t *testing.T) {
	dir := t.TempDir()
	p := &memPub{ids: map[string]int{}}
	a := newAgent(t, dir, p)
	path := filepath.Join(dir, "x.audit.jsonl")
	// An oversized line longer than one read, then a good one.
	appendFile(t, path, strings.Repeat("q", 3<<20)+"\n"+line("after")+"\x00\x01garbage\n")
	for range 6 {
		if err := a.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	k := p.kinds()
	if k["k:after"] != 1 || k[audit.KindTooLarge+":"] != 1 || len(p.msgs) != 3 {
		t.Fatalf("kinds %v (%d messages)", k, len(p.msgs))
	}
	if st := a.Stats(); st.TooLarge != 1 || st.Raw != 1 || st.LagBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestMsgIDs(t *testing.T) {
	a := newTestAgent(t, "")
	f1 := &fileState{Dev: 1, Ino: 2, Head: "h"}
	f2 := &fileState{Dev: 1, Ino: 3, Head: "h"}
	id := a.msgID(f1, 0x1234)
	if len(id) != 42 || id[16] != '-' || id[25] != '-' || id[17:25] != "00000000" || id[26:] != "0000000000001234" {
		t.Fatalf("id %q", id)
	}
	if a.msgID(f1, 0x1234) != id || a.msgID(f2, 0x1234) == id || a.msgID(f1, 0x1235) <= id {
		t.Fatal("IDs are not deterministic, distinct per file, and growing with the offset")
	}
	f1.Gen = 1
	if a.msgID(f1, 0x1234) == id {
		t.Fatal("a truncated file reuses IDs")
	}
}
