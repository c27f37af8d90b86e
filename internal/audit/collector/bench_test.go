package collector

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsec/ward/audit"
)

// BenchmarkPipeline measures file → agent (redaction on) → embedded NATS
// JetStream → collector (SQLite, hash chain) for b.N events already
// written to the audit files, and reports events/s and MiB/s of file
// bytes. Everything shares the 2 cores.
func BenchmarkPipeline(b *testing.B) { benchPipeline(b, 0) }

// BenchmarkPipelinePII is BenchmarkPipeline with a card number and an
// e-mail address in every tenth event (b/10) or every event (b/1): the
// redactor's regular expressions run on those.
func BenchmarkPipelinePII(b *testing.B) {
	b.Run("1-in-10", func(b *testing.B) { benchPipeline(b, 10) })
	b.Run("every", func(b *testing.B) { benchPipeline(b, 1) })
}

func benchPipeline(b *testing.B, piiEvery int) {
	p := newPipeline(b)
	w, err := audit.NewWriter(audit.Config{Dir: p.dir, Service: "bench", MaxFileBytes: 32 << 20, Buffer: 1 << 16, MaxWait: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		reason := "granted"
		if piiEvery > 0 && i%piiEvery == 0 {
			reason = "refund to card 4111 1111 1111 1111 for bob@example.com"
		}
		w.Write(audit.Event{Kind: audit.KindDecision, CorrelationID: fmt.Sprintf("%032x", i), Caller: "spiffe://ward.test/svc/web",
			User: "alice", Action: "read", Resource: "orders", Decision: audit.Allow, Reason: reason})
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	var bytes int64
	paths, _ := filepath.Glob(filepath.Join(p.dir, "*.audit.jsonl*"))
	for _, path := range paths {
		if st, err := os.Stat(path); err == nil {
			bytes += st.Size()
		}
	}
	b.ResetTimer()
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := p.newAgent(filepath.Join(b.TempDir(), "state.json"))
	go func() { _ = a.Run(ctx) }()
	for {
		n, err := p.store.Count(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if n >= int64(b.N) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
	b.ReportMetric(float64(bytes)/(1<<20)/el.Seconds(), "MiB/s")
	_ = strings.TrimSpace
}
