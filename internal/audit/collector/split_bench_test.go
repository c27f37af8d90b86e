package collector

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/wardsec/ward/audit"
	"github.com/wardsec/ward/internal/store/storetest"
)

// BenchmarkAgentOnly is the agent's share: file → redaction → JetStream
// acknowledged, no collector.
func BenchmarkAgentOnly(b *testing.B) {
	p := newPipeline(b)
	p.stopCollector()
	w, _ := audit.NewWriter(audit.Config{Dir: p.dir, Service: "bench", MaxFileBytes: 32 << 20, Buffer: 1 << 16, MaxWait: time.Second})
	for i := range b.N {
		w.Write(audit.Event{Kind: audit.KindDecision, CorrelationID: fmt.Sprintf("%032x", i), Caller: "spiffe://ward.test/svc/web",
			User: "alice", Action: "read", Resource: "orders", Decision: audit.Allow, Reason: "granted"})
	}
	w.Close()
	a := p.newAgent(filepath.Join(b.TempDir(), "state.json"))
	b.ResetTimer()
	start := time.Now()
	for {
		if err := a.Once(context.Background()); err != nil {
			b.Fatal(err)
		}
		if a.Stats().Published >= uint64(b.N) {
			break
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkCollectorOnly is the collector's share: the stream holds b.N
// events already; the collector stores them.
func BenchmarkCollectorOnly(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchCollector(b, filepath.Join(b.TempDir(), "audit.db")) })
	b.Run("postgres", func(b *testing.B) { benchCollector(b, storetest.PostgresDSN(b)) })
}

func benchCollector(b *testing.B, dsn string) {
	p := newPipelineOn(b, dsn)
	p.stopCollector()
	w, _ := audit.NewWriter(audit.Config{Dir: p.dir, Service: "bench", MaxFileBytes: 32 << 20, Buffer: 1 << 16, MaxWait: time.Second})
	for i := range b.N {
		w.Write(audit.Event{Kind: audit.KindDecision, CorrelationID: fmt.Sprintf("%032x", i), Caller: "spiffe://ward.test/svc/web",
			User: "alice", Action: "read", Resource: "orders", Decision: audit.Allow, Reason: "granted"})
	}
	w.Close()
	a := p.newAgent(filepath.Join(b.TempDir(), "state.json"))
	for a.Stats().Published < uint64(b.N) {
		if err := a.Once(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	p.startCollector()
	for {
		n, _ := p.store.Count(context.Background())
		if n >= int64(b.N) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}
