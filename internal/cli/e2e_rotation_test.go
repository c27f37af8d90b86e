package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRotationNoFailedRequests runs continuous mTLS requests between an SDK
// client and an SDK server while both renew 3-second SVIDs against the real
// authority; not one request may fail.
func TestRotationNoFailedRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	d := startDev(t, t.TempDir())
	d.mustWard("team", "create", "rot")
	serverDir := d.newService("rot", "rot-server", "L1", "--svid-ttl", "3s")
	clientDir := d.newService("rot", "rot-client", "L1", "--svid-ttl", "3s")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := runSource(t, ctx, d, serverDir)
	addr := serveWhoami(t, ctx, server)
	client := newClient(t, ctx, d, clientDir)

	const runFor = 10 * time.Second // > 3 lifetimes of each SVID
	var ok, failed atomic.Int64
	serials := struct {
		sync.Mutex
		client, server map[string]bool
	}{client: map[string]bool{}, server: map[string]bool{}}
	deadline := time.Now().Add(runFor)
	var wg sync.WaitGroup
	worker := func(c *sdkClient, keepAlive bool) {
		defer wg.Done()
		for time.Now().Before(deadline) {
			cc := c
			if !keepAlive {
				cc = c.fresh()
			}
			resp, err := cc.Get("https://" + addr + "/rotate")
			if err != nil {
				failed.Add(1)
				t.Errorf("request failed: %v", err)
				continue
			}
			var got struct {
				CallerSPIFFEID string `json:"caller_spiffe_id"`
			}
			err = json.NewDecoder(resp.Body).Decode(&got)
			_ = resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || got.CallerSPIFFEID != "spiffe://ward.test/svc/rot-client" {
				failed.Add(1)
				t.Errorf("bad answer: status %d err %v caller %q", resp.StatusCode, err, got.CallerSPIFFEID)
				continue
			}
			ok.Add(1)
			serials.Lock()
			serials.client[client.svidSerial()] = true
			serials.server[server.SVID().Certificates[0].SerialNumber.Text(16)] = true
			serials.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}
	wg.Add(3)
	go worker(client, true)
	go worker(client, false)
	go worker(client, false)
	wg.Wait()
	t.Logf("%d requests ok, %d failed; client SVIDs used %d, server SVIDs used %d", ok.Load(), failed.Load(), len(serials.client), len(serials.server))
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during rotation", failed.Load())
	}
	if len(serials.client) < 3 || len(serials.server) < 3 {
		t.Fatalf("certificates did not rotate: client %d, server %d distinct serials", len(serials.client), len(serials.server))
	}
}
