package cli

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wardsec/ward/identity"
)

type caRow struct {
	ID          string `json:"id"`
	Kind        string `json:"kind"`
	Team        string `json:"team"`
	ParentID    string `json:"parent_id"`
	State       string `json:"state"`
	Fingerprint string `json:"fingerprint"`
}

func (d *devEnv) cas() []caRow {
	d.t.Helper()
	var rows []caRow
	if err := json.Unmarshal([]byte(d.mustWard("ca", "list", "-o", "json")), &rows); err != nil {
		d.t.Fatal(err)
	}
	return rows
}

// TestRootRotationNoFailedHandshakes rotates the root CA (prepare, activate,
// retire) while an SDK client and server keep talking with 3-second SVIDs;
// no request may fail, and afterwards both hold certificates from the new root
// and a bundle without the old one.
func TestRootRotationNoFailedHandshakes(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	// Without dev's vault: an L3 service, its 15-minute SVIDs would hold
	// the old root for up to 15 minutes, as documented for every service.
	d := startDev(t, t.TempDir(), "--vault=false")
	d.mustWard("team", "create", "rot")
	serverDir := d.newService("rot", "b-server", "L1", "--svid-ttl", "3s")
	clientDir := d.newService("rot", "b-client", "L1", "--svid-ttl", "3s")

	var oldRoot string
	for _, c := range d.cas() {
		if c.Kind == "root" && c.State == "active" {
			oldRoot = c.ID
		}
	}
	if oldRoot == "" {
		t.Fatalf("no active root in %+v", d.cas())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := runSource(t, ctx, d, serverDir)
	addr := serveWhoami(t, ctx, server)
	client := newClient(t, ctx, d, clientDir)

	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var stopOnce sync.Once
	halt := func() {
		stopOnce.Do(func() { close(stop) })
		wg.Wait()
	}
	defer halt()
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(keepAlive bool) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c := client
				if !keepAlive {
					c = client.fresh()
				}
				resp, err := c.Get("https://" + addr + "/")
				if err != nil {
					failed.Add(1)
					t.Errorf("request failed: %v", err)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Errorf("status %d", resp.StatusCode)
					continue
				}
				ok.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}(i == 0)
	}

	// Phase 1: prepare. The new root joins the bundle.
	var rotated caRow
	if err := json.Unmarshal([]byte(d.mustWard("ca", "rotate", "--kind", "root", "-o", "json")), &rotated); err != nil {
		t.Fatal(err)
	}
	if rotated.ID == "" || rotated.State != "prepared" {
		t.Fatalf("rotate answered %+v", rotated)
	}
	waitFor(t, 5*time.Second, "SDKs see the new root in their bundle", func() bool {
		return bundleHas(server, rotated.ID, d) && bundleHas(client.src, rotated.ID, d)
	})
	// Clients of the authority (here: the CLI, via dev's bundle.pem) must
	// hold the new root too before it is activated.
	newRootCert := rootCert(t, d, rotated.ID)

	// Phase 2: activate. Renewals move to the new root.
	d.mustWard("ca", "activate", rotated.ID)
	waitFor(t, 10*time.Second, "both SDKs renewed onto the new root", func() bool {
		return chainsTo(server, newRootCert) && chainsTo(client.src, newRootCert)
	})
	// Let every certificate of the old hierarchy of these services expire.
	time.Sleep(4 * time.Second)

	// Phase 3: retire the old root.
	// Without --force: it succeeds once nothing live chains to the old root
	// (the authority's own and its components' certificates move to the new
	// hierarchy on their own, the old ones revoked as superseded); until
	// then the authority answers 409.
	waitFor(t, 15*time.Second, "the old root can be retired", func() bool {
		_, err := d.ward("ca", "retire", oldRoot)
		if err != nil && !strings.Contains(err.Error(), "409") && !strings.Contains(strings.ToLower(err.Error()), "conflict") {
			t.Fatalf("retire: %v", err)
		}
		return err == nil
	})
	waitFor(t, 5*time.Second, "SDKs dropped the old root", func() bool {
		return !bundleHas(server, oldRoot, d) && !bundleHas(client.src, oldRoot, d)
	})
	time.Sleep(2 * time.Second)
	halt()
	t.Logf("%d requests ok, %d failed", ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during root rotation", failed.Load())
	}
	for _, c := range d.cas() {
		if c.ID == oldRoot && c.State != "retired" {
			t.Fatalf("old root state %q", c.State)
		}
	}
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *devEnv) fingerprint(caID string) string {
	for _, c := range d.cas() {
		if c.ID == caID {
			return c.Fingerprint
		}
	}
	d.t.Fatalf("no CA %s", caID)
	return ""
}

// bundleRoot returns the root with the CA's fingerprint from src's bundle.
func bundleRoot(src *identity.Source, fp string) *x509.Certificate {
	for _, c := range src.Bundle().X509Authorities() {
		sum := sha256.Sum256(c.Raw)
		if hex.EncodeToString(sum[:]) == fp {
			return c
		}
	}
	return nil
}

func bundleHas(src *identity.Source, caID string, d *devEnv) bool {
	return bundleRoot(src, d.fingerprint(caID)) != nil
}

func rootCert(t *testing.T, d *devEnv, caID string) *x509.Certificate {
	t.Helper()
	fp := d.fingerprint(caID)
	var out *x509.Certificate
	waitFor(t, 5*time.Second, "root in dev bundle", func() bool {
		certs, err := loadPEMCerts(d.vars["WARD_CA_BUNDLE"])
		if err != nil {
			return false
		}
		for _, c := range certs {
			sum := sha256.Sum256(c.Raw)
			if hex.EncodeToString(sum[:]) == fp {
				out = c
				return true
			}
		}
		return false
	})
	return out
}

// chainsTo reports whether src's current SVID chains to root.
func chainsTo(src *identity.Source, root *x509.Certificate) bool {
	chain := src.SVID().Certificates
	return len(chain) >= 2 && chain[len(chain)-1].CheckSignatureFrom(root) == nil
}
