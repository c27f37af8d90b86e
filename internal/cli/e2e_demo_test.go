package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoTour runs `ward demo` exactly as the README's first command
// does (in-process, on free ports) and requires every step of the tour to
// behave as expected, with the audit trail of the order printed.
func TestDemoTour(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := filepath.Join(t.TempDir(), "demo")
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := run(ctx, []string{"demo", "--data", dir, "-o", "json"}, strings.NewReader(""), &out, &errb)
	var rep demoReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("exit %d, output is not the report: %v\n%s\n%s", code, err, out.String(), errb.String())
	}
	for _, s := range rep.Steps {
		t.Logf("step %d %s: %s", s.N, s.Name, s.Got)
		if !s.OK {
			t.Errorf("step %d (%s) did not behave as expected: %s", s.N, s.Name, s.Got)
		}
	}
	if code != 0 || !rep.Passed || len(rep.Steps) != 7 {
		t.Fatalf("exit %d, passed %t, %d steps; stderr:\n%s", code, rep.Passed, len(rep.Steps), errb.String())
	}
	services := map[string]bool{}
	for _, e := range rep.Trail {
		services[e.Service] = true
		if e.CorrelationID != rep.Trail[0].CorrelationID {
			t.Errorf("trail mixes correlation IDs: %+v", e)
		}
	}
	for _, s := range []string{"ward-gateway", "orders", "inventory", "payments", "vault", "shipping"} {
		if !services[s] {
			t.Errorf("the trail has no event from %s", s)
		}
	}
	t.Logf("ward demo took %s", rep.Elapsed)

	// The text form is a table with the seven rows and the trail.
	var text bytes.Buffer
	printDemo(&text, rep)
	for _, want := range []string{"ATTEMPTED", "EXPECTED", "HAPPENED", "customer order", "audit trail", "every step behaved as expected"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}

	// A second demo on the same directory is refused with a one-line
	// message.
	errb.Reset()
	if code := run(ctx, []string{"demo", "--data", dir}, strings.NewReader(""), io.Discard, &errb); code != 2 ||
		!strings.Contains(errb.String(), "already holds a ward") || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("demo on a used directory: exit %d, %q", code, errb.String())
	}
}

// TestDemoKeep runs the tour with --keep: the system stays up after the
// tour, demo.env holds a working customer key and the shop's addresses,
// and an interrupt stops it cleanly.
func TestDemoKeep(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	dir := filepath.Join(t.TempDir(), "demo")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--keep", "--data", dir}, strings.NewReader(""), io.Discard, io.Discard)
	}()
	var vars map[string]string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if v, err := readEnvFile(filepath.Join(dir, "demo.env")); err == nil && v["WARD_DEMO_KEY"] != "" {
			vars = v
			break
		}
		select {
		case code := <-done:
			t.Fatalf("ward demo --keep exited with %d before writing demo.env", code)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("demo.env not written")
		}
	}
	dev, err := readEnvFile(filepath.Join(dir, "dev.env"))
	if err != nil {
		t.Fatal(err)
	}
	d := &demo{vars: dev}
	if d.https, err = trustingClient(dev["WARD_CA_BUNDLE"]); err != nil {
		t.Fatal(err)
	}
	// carol orders through the gateway while the demo keeps running.
	code, body, _, err := d.gateway(ctx, vars["WARD_DEMO_KEY"], "POST", "/orders", `{"sku":"sku-desk","quantity":1,"card_number":"4111 1111 1111 1111"}`)
	if err != nil || code != 201 {
		t.Fatalf("order with the kept key: %d %s %v", code, body, err)
	}
	// A declined card is a clear 402, and bad input a 4xx, never a 500.
	for _, c := range []struct {
		body string
		want int
	}{
		{`{"sku":"sku-desk","quantity":1,"card_number":"4000 0000 0000 0002"}`, 402},
		{`{"sku":"sku-desk","quantity":1,"card_number":"4111 1111 1111 1112"}`, 422},
		{`{"sku":"sku-none","quantity":1,"card_number":"4111 1111 1111 1111"}`, 404},
		{`{"sku":"sku-desk","quantity":0,"card_number":"4111 1111 1111 1111"}`, 400},
		{`{"sku":"sku-desk","quantity":1,"card_number":"4111 1111 1111 1111","x":1}`, 400},
		{`not json`, 400},
	} {
		code, body, _, err := d.gateway(ctx, vars["WARD_DEMO_KEY"], "POST", "/orders", c.body)
		if err != nil || code != c.want || !strings.Contains(string(body), `"title"`) {
			t.Errorf("POST /orders %s: %d %s %v, want %d problem", c.body, code, body, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "shop", "orders", "orders.jsonl")); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("ward demo --keep exited with %d after an interrupt", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ward demo --keep did not stop")
	}
}
