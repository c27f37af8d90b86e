package authority

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/wardsec/ward/internal/ca"
	"github.com/wardsec/ward/internal/store"
)

// nextBundle skips other events up to the next bundle event and returns
// its verified payload.
func nextBundle(t *testing.T, ws *watchStream, pub ed25519.PublicKey) (bundlePayload, int64) {
	t.Helper()
	for {
		ev := ws.next(t, 5*time.Second)
		if ev.Kind != kindBundle {
			continue
		}
		var p struct {
			bundlePayload
			Version int64 `json:"version"`
		}
		verifyEvent(t, pub, ev, &p)
		if p.Version != ev.Seq {
			t.Fatalf("payload version %d, seq %d", p.Version, ev.Seq)
		}
		return p.bundlePayload, ev.Seq
	}
}

func bundleOf(t *testing.T, pemData string) *x509bundle.Bundle {
	t.Helper()
	certs, err := ca.ParseCertsPEM([]byte(pemData))
	if err != nil {
		t.Fatal(err)
	}
	return x509bundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString("ward.test"), certs)
}

func TestRootRotation(t *testing.T) {
	e := newEnv(t)
	token := e.createService("shop", "web", "L2")
	old := e.fetch(token)
	pub, _ := e.signingKeyOf()
	ws, watcher := e.watchPastSnapshot()

	var cas []caView
	e.admin("GET", "/v1/cas", nil, http.StatusOK, &cas)
	var oldRoot string
	for _, c := range cas {
		if c.Kind == store.CAKindRoot {
			oldRoot = c.ID
		}
	}

	// 1. A new root, prepared: in the bundle, not issuing.
	var root caView
	e.admin("POST", "/v1/cas/rotate", map[string]string{"kind": "root"}, http.StatusCreated, &root)
	if root.State != store.CAStatePrepared || len(root.Intermediates) != 3 {
		t.Fatalf("rotate answer %+v", root)
	}
	bp, _ := nextBundle(t, ws, pub)
	if bp.BundleVersion != 2 || strings.Count(bp.BundlePEM, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("bundle after rotate: version %d, %d roots", bp.BundleVersion, strings.Count(bp.BundlePEM, "BEGIN CERTIFICATE"))
	}
	if s := e.fetch(token); !s.certs[1].Equal(old.certs[1]) {
		t.Fatal("a prepared root's intermediate is issuing")
	}

	// Continuous fresh mTLS handshakes from here on, trusting the bundle
	// the watch stream delivered: none may fail during activation.
	trust := x509.NewCertPool()
	trust.AppendCertsFromPEM([]byte(bp.BundlePEM))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var okCount, failCount atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{
				RootCAs: trust, Certificates: []tls.Certificate{*watcher.tlsCert()},
			}}}
			if resp, _, err := e.try(c, "GET", "/v1/bundle", "", nil); err != nil || resp.StatusCode != 200 {
				failCount.Add(1)
				t.Errorf("handshake during rotation: %v", err)
			} else {
				okCount.Add(1)
			}
		}
	}()

	// 2. Activate: the new root's intermediates issue; the old ones retire.
	var act caView
	e.admin("POST", "/v1/cas/"+root.ID+"/activate", nil, http.StatusOK, &act)
	if act.State != store.CAStateActive {
		t.Fatalf("activate answer %+v", act)
	}
	bp, _ = nextBundle(t, ws, pub)
	if bp.BundleVersion != 3 || strings.Count(bp.BundlePEM, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("bundle after activate: version %d", bp.BundleVersion)
	}
	newRoots := x509.NewCertPool()
	newRoots.AppendCertsFromPEM([]byte(bp.BundlePEM))
	newPub := verifySigningCert(t, []byte(bp.SigningCertPEM), newRoots)
	if !newPub.Equal(pub) {
		t.Fatal("signing key changed")
	}
	sc, _ := ca.ParseCertsPEM([]byte(bp.SigningCertPEM))
	if sc[1].Equal(old.certs[1]) || !strings.Contains(sc[1].Issuer.String(), root.cert(t).Subject.CommonName) {
		t.Fatalf("signing certificate not re-issued under the new root: issuer %s", sc[1].Issuer)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failCount.Load() != 0 || okCount.Load() == 0 {
		t.Fatalf("handshakes during activation: %d ok, %d failed", okCount.Load(), failCount.Load())
	}

	// New SVIDs chain to the new root; old ones still verify and renew.
	fresh := e.fetch(token)
	b := bundleOf(t, bp.BundlePEM)
	if _, chains, err := x509svid.Verify(fresh.certs, b); err != nil || !chains[0][2].Equal(root.cert(t)) {
		t.Fatalf("new SVID: %v", err)
	}
	if _, _, err := x509svid.Verify(old.certs, b); err != nil {
		t.Fatalf("old SVID no longer verifies: %v", err)
	}
	if resp, body := e.renew(e.client(old.tlsCert()), old); resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew with an old-root SVID: %d %s", resp.StatusCode, body)
	}
	// The authority serves a certificate from the new root.
	conn, err := tls.Dial("tcp", strings.TrimPrefix(e.url, "https://"), &tls.Config{RootCAs: newRoots})
	if err != nil {
		t.Fatal(err)
	}
	chain := conn.ConnectionState().PeerCertificates
	conn.Close()
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: rootPool(root.cert(t)), Intermediates: poolOf(chain[1:]...)}); err != nil {
		t.Fatalf("serving certificate not under the new root: %v", err)
	}

	// 3. Retire the old root: refused while certificates chain to it.
	resp, body := e.do(nil, "POST", "/v1/cas/"+oldRoot+"/retire", e.adminToken, nil)
	p := wantProblem(t, resp, body, 409, slugConflict)
	if !strings.Contains(p.Detail, "unexpired certificates") {
		t.Fatalf("detail %q", p.Detail)
	}
	resp, body = e.do(nil, "POST", "/v1/cas/"+root.ID+"/retire", e.adminToken, nil)
	wantProblem(t, resp, body, 409, slugConflict) // active
	var ret caView
	e.admin("POST", "/v1/cas/"+oldRoot+"/retire", map[string]bool{"force": true}, http.StatusOK, &ret)
	if ret.State != store.CAStateRetired {
		t.Fatalf("retire answer %+v", ret)
	}
	bp, _ = nextBundle(t, ws, pub)
	if bp.BundleVersion != 4 || strings.Count(bp.BundlePEM, "BEGIN CERTIFICATE") != 1 {
		t.Fatalf("bundle after retire: version %d", bp.BundleVersion)
	}
	verifySigningCert(t, []byte(bp.SigningCertPEM), newRoots)
	if _, _, err := x509svid.Verify(old.certs, bundleOf(t, bp.BundlePEM)); err == nil {
		t.Fatal("old SVID verifies after its root was retired")
	}
	if _, _, err := e.try(e.client(old.tlsCert()), "GET", "/v1/bundle", "", nil); err == nil {
		t.Fatal("old-root SVID accepted after retirement")
	}
	e.admin("GET", "/v1/cas", nil, http.StatusOK, &cas)
	for _, c := range cas {
		oldSide := c.ID == oldRoot || c.ParentID == oldRoot
		if oldSide && c.State != store.CAStateRetired {
			t.Fatalf("CA %s of the old root is %s", c.ID, c.State)
		}
		if !oldSide && c.State != store.CAStateActive {
			t.Fatalf("CA %s of the new root is %s", c.ID, c.State)
		}
	}
}

func (v caView) cert(t *testing.T) *x509.Certificate {
	t.Helper()
	certs, err := ca.ParseCertsPEM([]byte(v.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func rootPool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

func poolOf(cs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}

func TestIntermediateRotation(t *testing.T) {
	e := newEnv(t)
	token := e.createService("shop", "web", "L2")
	old := e.fetch(token)
	var teams []teamView
	e.admin("GET", "/v1/teams", nil, http.StatusOK, &teams)
	oldCA := teams[0].CAID

	var inter caView
	e.admin("POST", "/v1/cas/rotate", map[string]string{"kind": "intermediate", "team": "shop"}, http.StatusCreated, &inter)
	if inter.State != store.CAStatePrepared || inter.Team != "shop" {
		t.Fatalf("rotate answer %+v", inter)
	}
	e.admin("POST", "/v1/cas/"+inter.ID+"/activate", nil, http.StatusOK, nil)
	fresh := e.fetch(token)
	if !fresh.certs[1].Equal(inter.cert(t)) {
		t.Fatal("not issuing from the activated intermediate")
	}
	if _, _, err := e.try(e.client(old.tlsCert()), "GET", "/v1/bundle", "", nil); err != nil {
		t.Fatalf("SVID of a retiring intermediate refused: %v", err)
	}
	resp, body := e.do(nil, "POST", "/v1/cas/"+oldCA+"/retire", e.adminToken, nil)
	wantProblem(t, resp, body, 409, slugConflict)
	e.admin("POST", "/v1/services/web/revoke", nil, http.StatusOK, nil) // nothing left chains to it
	var ret caView
	e.admin("POST", "/v1/cas/"+oldCA+"/retire", nil, http.StatusOK, &ret)
	if ret.State != store.CAStateRetired {
		t.Fatalf("retire answer %+v", ret)
	}

	// The authority's own intermediate rotates too; the signing and serving
	// certificates follow it.
	e.admin("POST", "/v1/cas/rotate", map[string]any{"kind": "intermediate", "team": ""}, http.StatusCreated, &inter)
	e.admin("POST", "/v1/cas/"+inter.ID+"/activate", nil, http.StatusOK, nil)
	if e.a.signing.Load().issuerID != inter.ID {
		t.Fatal("signing certificate did not follow the default intermediate")
	}
	waitFor(t, 5*time.Second, "serving certificate re-issue", func() bool { return e.a.serving.Load().issuerID == inter.ID })
	e.signingKeyOf()

	for _, tc := range []struct {
		name   string
		path   string
		body   any
		status int
		slug   string
	}{
		{"bad kind", "/v1/cas/rotate", map[string]string{"kind": "leaf"}, 400, slugInvalidRequest},
		{"no kind", "/v1/cas/rotate", map[string]string{}, 400, slugInvalidRequest},
		{"root with team", "/v1/cas/rotate", map[string]string{"kind": "root", "team": "shop"}, 400, slugInvalidRequest},
		{"unknown team", "/v1/cas/rotate", map[string]string{"kind": "intermediate", "team": "nope"}, 404, slugNotFound},
		{"bad team name", "/v1/cas/rotate", map[string]string{"kind": "intermediate", "team": "No"}, 400, slugInvalidRequest},
		{"activate unknown", "/v1/cas/int-nope/activate", nil, 404, slugNotFound},
		{"retire unknown", "/v1/cas/int-nope/retire", nil, 404, slugNotFound},
		{"activate retired", "/v1/cas/" + oldCA + "/activate", nil, 409, slugConflict},
		{"retire active", "/v1/cas/" + inter.ID + "/retire", nil, 409, slugConflict},
		{"retire bad body", "/v1/cas/" + oldCA + "/retire", `{"force":"yes"}`, 400, slugInvalidRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(nil, "POST", tc.path, e.adminToken, tc.body)
			wantProblem(t, resp, body, tc.status, tc.slug)
		})
	}
}
