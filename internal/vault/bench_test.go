package vault

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkVault measures tokenize and detokenize on SQLite, in batches
// of 100 and one by one, with the vault API (JSON over HTTPS, no PEP) and
// without it. It reports values/s.
func BenchmarkVault(b *testing.B) {
	ctx := context.Background()
	v, _ := newVault(b, nil)
	values := func(n, off int) []Item {
		items := make([]Item, n)
		for i := range items {
			items[i] = Item{Value: fmt.Sprintf("4111 1111 1111 %04d", (off+i)%10000), Subject: fmt.Sprintf("s%d", (off+i)%1000)}
		}
		return items
	}
	// Only Luhn-valid numbers are card numbers: use generic values.
	gen := func(n, off int) []Item {
		items := values(n, off)
		for i := range items {
			items[i].Value = fmt.Sprintf("value %d", off+i)
		}
		return items
	}
	for _, batch := range []int{100, 1} {
		b.Run(fmt.Sprintf("tokenize/batch-%d", batch), func(b *testing.B) {
			n := 0
			for b.Loop() {
				if _, err := v.Tokenize(ctx, TypeGeneric, gen(batch, n), 0); err != nil {
					b.Fatal(err)
				}
				n += batch
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "values/s")
		})
	}
	toks, err := v.Tokenize(ctx, TypeGeneric, gen(1000, 0), 0)
	if err != nil {
		b.Fatal(err)
	}
	for _, batch := range []int{100, 1} {
		b.Run(fmt.Sprintf("detokenize/batch-%d", batch), func(b *testing.B) {
			n := 0
			for b.Loop() {
				i := n % (len(toks) - batch + 1)
				if _, err := v.Detokenize(ctx, TypeGeneric, toks[i:i+batch]); err != nil {
					b.Fatal(err)
				}
				n += batch
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "values/s")
		})
	}
	// Over HTTPS, in parallel (2 cores), batches of 100.
	srv := httptest.NewTLSServer(v.Handler(nil, nil))
	defer srv.Close()
	hc := srv.Client()
	post := func(b *testing.B, path string, body any) {
		data, _ := json.Marshal(body)
		resp, err := hc.Post(srv.URL+path, "application/json", bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d %s", path, resp.StatusCode, buf.String())
		}
	}
	b.Run("https/tokenize/batch-100", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				post(b, "/v1/tokenize/generic", TokenizeRequest{Values: gen(100, i)})
				i += 100
			}
		})
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "values/s")
	})
	b.Run("https/detokenize/batch-100", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				j := (i * 100) % 900
				post(b, "/v1/detokenize/generic", DetokenizeRequest{Tokens: toks[j : j+100]})
				i++
			}
		})
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "values/s")
	})
}
