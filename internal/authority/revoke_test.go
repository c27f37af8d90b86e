package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/wardsec/ward/internal/bus"
	"github.com/wardsec/ward/internal/ca"
)

// ocspQuery asks the authority about leaf (issued by issuer), by POST or GET.
func (e *env) ocspQuery(leaf, issuer *x509.Certificate, get bool) *ocsp.Response {
	e.t.Helper()
	req, err := ocsp.CreateRequest(leaf, issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		e.t.Fatal(err)
	}
	var resp *http.Response
	var body []byte
	if get {
		resp, body = e.do(nil, "GET", "/ocsp/"+base64.StdEncoding.EncodeToString(req), "", nil)
	} else {
		resp, body = e.do(nil, "POST", "/ocsp", "", req)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/ocsp-response" {
		e.t.Fatalf("ocsp: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		e.t.Fatalf("ocsp response: %v", err)
	}
	if err := r.CheckSignatureFrom(issuer); err != nil && r.Certificate == nil {
		// ParseResponseForCert already verified the signature with issuer.
		e.t.Fatal(err)
	}
	return r
}

// crlOf fetches a CRL from a distribution point URL and checks its
// signature against issuer.
func (e *env) crlOf(dp string, issuer *x509.Certificate) *x509.RevocationList {
	e.t.Helper()
	resp, body := e.do(nil, "GET", strings.TrimPrefix(dp, e.url), "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		e.t.Fatalf("crl %s: %d %s", dp, resp.StatusCode, body)
	}
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		e.t.Fatalf("crl signature: %v", err)
	}
	if d := crl.NextUpdate.Sub(crl.ThisUpdate); d != time.Hour {
		e.t.Fatalf("crl validity %v", d)
	}
	return crl
}

func crlHas(crl *x509.RevocationList, serial *big.Int) (x509.RevocationListEntry, bool) {
	for _, r := range crl.RevokedCertificateEntries {
		if r.SerialNumber.Cmp(serial) == 0 {
			return r, true
		}
	}
	return x509.RevocationListEntry{}, false
}

func TestRevocationShowsEverywhere(t *testing.T) {
	e := newEnv(t)
	token := e.createService("shop", "web", "L2")
	watcherSVID := e.fetch(token)
	victim := e.fetch(token)
	pub, _ := e.signingKeyOf()

	ws, err := e.watch(e.client(watcherSVID.tlsCert()), "")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.close()
	snap := ws.next(t, 5*time.Second)
	if snap.Kind != kindSnapshot {
		t.Fatalf("first event %s", snap.Kind)
	}
	var sp snapshotPayload
	verifyEvent(t, pub, snap, &sp)
	if len(sp.RevokedSerials) != 0 || sp.BundleVersion != 1 || sp.Version != snap.Seq {
		t.Fatalf("snapshot %+v", sp)
	}

	leaf, inter := victim.certs[0], victim.certs[1]
	for _, get := range []bool{false, true} {
		if r := e.ocspQuery(leaf, inter, get); r.Status != ocsp.Good {
			t.Fatalf("before revocation: status %d", r.Status)
		}
	}
	crl0 := e.crlOf(leaf.CRLDistributionPoints[0], inter)
	if _, ok := crlHas(crl0, leaf.SerialNumber); ok {
		t.Fatal("serial on the CRL before revocation")
	}

	start := time.Now()
	var out map[string]any
	e.admin("POST", "/v1/svids/"+victim.serial()+"/revoke", map[string]string{"reason": "keyCompromise"}, http.StatusOK, &out)
	if out["serial"] != victim.serial() || out["reason"] != "keyCompromise" {
		t.Fatalf("revoke answer %v", out)
	}

	// Watch stream: a signed revocation event, within milliseconds.
	ev := ws.next(t, 2*time.Second)
	t.Logf("revocation reached the watcher %v after the request started", time.Since(start))
	if ev.Kind != kindRevocation || ev.Seq <= snap.Seq {
		t.Fatalf("event %+v", ev)
	}
	var rp struct {
		revocationPayload
		Version int64 `json:"version"`
	}
	verifyEvent(t, pub, ev, &rp)
	if !slices.Contains(rp.Serials, victim.serial()) || rp.Reason != "keyCompromise" || rp.Version != ev.Seq {
		t.Fatalf("revocation payload %+v", rp)
	}
	// A tampered payload does not verify.
	bad := bytes.Replace(ev.Payload, []byte(victim.serial()), []byte(watcherSVID.serial()), 1)
	if verifyOK(pub, bad, ev.Sig) {
		t.Fatal("tampered payload verifies")
	}

	// OCSP (POST and GET) and CRL.
	for _, get := range []bool{false, true} {
		r := e.ocspQuery(leaf, inter, get)
		if r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise {
			t.Fatalf("after revocation: status %d reason %d", r.Status, r.RevocationReason)
		}
	}
	if r := e.ocspQuery(watcherSVID.certs[0], inter, false); r.Status != ocsp.Good {
		t.Fatalf("unrevoked sibling: status %d", r.Status)
	}
	crl := e.crlOf(leaf.CRLDistributionPoints[0], inter)
	entry, ok := crlHas(crl, leaf.SerialNumber)
	if !ok || entry.ReasonCode != ocsp.KeyCompromise {
		t.Fatalf("CRL entries %+v", crl.RevokedCertificateEntries)
	}
	if crl.Number.Cmp(crl0.Number) <= 0 {
		t.Fatalf("CRL number %v after %v", crl.Number, crl0.Number)
	}

	// Revoking twice changes nothing and emits nothing.
	e.admin("POST", "/v1/svids/"+victim.serial()+"/revoke", nil, http.StatusOK, &out)
	if out["reason"] != "keyCompromise" {
		t.Fatalf("second revoke changed the reason: %v", out)
	}

	// A new watcher's snapshot lists the serial.
	ws2, err := e.watch(e.client(watcherSVID.tlsCert()), "3")
	if err != nil {
		t.Fatal(err)
	}
	defer ws2.close()
	verifyEvent(t, pub, ws2.next(t, 5*time.Second), &sp)
	if !slices.Contains(sp.RevokedSerials, victim.serial()) {
		t.Fatalf("snapshot revoked %v", sp.RevokedSerials)
	}

	for _, tc := range []struct {
		name   string
		path   string
		body   any
		status int
		slug   string
	}{
		{"unknown serial", "/v1/svids/abcdef/revoke", nil, 404, slugNotFound},
		{"bad serial", "/v1/svids/not-hex/revoke", nil, 400, slugInvalidRequest},
		{"bad reason", "/v1/svids/" + victim.serial() + "/revoke", map[string]string{"reason": "because"}, 400, slugInvalidRequest},
		{"unknown service", "/v1/services/nope/revoke", nil, 404, slugNotFound},
		{"unknown ca", "/v1/cas/int-nope/revoke", nil, 404, slugNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.do(nil, "POST", tc.path, e.adminToken, tc.body)
			wantProblem(t, resp, body, tc.status, tc.slug)
		})
	}
}

func verifyOK(pub ed25519.PublicKey, msg, sig []byte) bool {
	return ed25519.Verify(pub, msg, sig)
}

func TestOCSPEdgeCases(t *testing.T) {
	e := newEnv(t)
	s := e.fetch(e.createService("shop", "web", "L2"))
	leaf, inter := s.certs[0], s.certs[1]

	// Unknown serial of a CA we hold: Unknown.
	fake := *leaf
	fake.SerialNumber = big.NewInt(12345)
	if r := e.ocspQuery(&fake, inter, false); r.Status != ocsp.Unknown {
		t.Fatalf("unknown serial: status %d", r.Status)
	}
	// SHA-256 CertIDs work too.
	req, err := ocsp.CreateRequest(leaf, inter, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	resp, body := e.do(nil, "POST", "/ocsp", "", req)
	if r, err := ocsp.ParseResponseForCert(body, leaf, inter); err != nil || r.Status != ocsp.Good || resp.StatusCode != 200 {
		t.Fatalf("sha256: %v %v", r, err)
	}

	// Malformed requests: an OCSP malformedRequest answer, never an HTTP error.
	for name, tc := range map[string]struct {
		method, path string
		body         any
	}{
		"garbage post":  {"POST", "/ocsp", []byte("not ocsp")},
		"empty post":    {"POST", "/ocsp", []byte{}},
		"oversize post": {"POST", "/ocsp", bytes.Repeat([]byte{0x30}, 5000)},
		"bad base64":    {"GET", "/ocsp/%25%25!!", nil},
		"garbage get":   {"GET", "/ocsp/" + base64.StdEncoding.EncodeToString([]byte("junk")), nil},
		"slashes":       {"GET", "/ocsp/ab//cd==", nil},
	} {
		resp, body := e.do(nil, tc.method, tc.path, "", tc.body)
		if resp.StatusCode != 200 || !bytes.Equal(body, ocsp.MalformedRequestErrorResponse) {
			t.Errorf("%s: %d %x", name, resp.StatusCode, body)
		}
	}
	// A CA we do not hold: unauthorized.
	foreign := foreignCert(t)
	fl, _ := x509.ParseCertificate(foreign.Certificate[0])
	fi, _ := x509.ParseCertificate(foreign.Certificate[1])
	req, err = ocsp.CreateRequest(fl, fi, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(nil, "POST", "/ocsp", "", req)
	if resp.StatusCode != 200 || !bytes.Equal(body, ocsp.UnauthorizedErrorResponse) {
		t.Fatalf("foreign CA: %d %x", resp.StatusCode, body)
	}

	// CRLs: unknown and malformed names are 404 problems.
	for _, p := range []string{"/crl/nope.crl", "/crl/nope", "/crl/..%2f.crl"} {
		resp, body := e.do(nil, "GET", p, "", nil)
		wantProblem(t, resp, body, 404, "")
	}
}

func TestRevokeService(t *testing.T) {
	e := newEnv(t)
	token := e.createService("shop", "web", "L2")
	other := e.fetch(e.createService("shop", "api", "L2"))
	a, b := e.fetch(token), e.fetch(token)
	pub, _ := e.signingKeyOf()
	ws, err := e.watch(e.client(other.tlsCert()), "")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.close()
	ws.next(t, 5*time.Second)

	var out struct {
		RevokedSerials []string `json:"revoked_serials"`
		RevokedTokens  int      `json:"revoked_tokens"`
	}
	e.admin("POST", "/v1/services/web/revoke", map[string]string{"reason": "cessationOfOperation"}, http.StatusOK, &out)
	want := []string{a.serial(), b.serial()}
	slices.Sort(want)
	if !slices.Equal(out.RevokedSerials, want) || out.RevokedTokens != 1 {
		t.Fatalf("revoke answer %+v, want serials %v", out, want)
	}
	var rp revocationPayload
	verifyEvent(t, pub, ws.next(t, 2*time.Second), &rp)
	if !slices.Equal(rp.Serials, want) || rp.Service != "web" {
		t.Fatalf("event %+v", rp)
	}
	// The bootstrap token is dead, the service is marked revoked.
	key := newKey(t)
	resp, body := e.do(nil, "POST", "/v1/svid", token, map[string]string{"csr": csrPEM(t, key, "", nil)})
	wantProblem(t, resp, body, 401, slugUnauthorized)
	var svc serviceView
	e.admin("GET", "/v1/services/web", nil, http.StatusOK, &svc)
	if svc.RevokedAt == nil {
		t.Fatal("service not marked revoked")
	}
	resp, body = e.do(nil, "POST", "/v1/services/web/bootstrap-token", e.adminToken, nil)
	wantProblem(t, resp, body, 409, slugConflict)
	if r := e.ocspQuery(a.certs[0], a.certs[1], false); r.Status != ocsp.Revoked {
		t.Fatalf("ocsp status %d", r.Status)
	}
}

func TestRevokeTeamIntermediate(t *testing.T) {
	e := newEnv(t)
	token := e.createService("shop", "web", "L2")
	s := e.fetch(token)
	oldInter := s.certs[1]
	oldCA := strings.TrimSuffix(strings.TrimPrefix(s.certs[0].CRLDistributionPoints[0], e.url+"/crl/"), ".crl")
	pub, _ := e.signingKeyOf()
	ws, _ := e.watchPastSnapshot()

	// Roots and the default intermediate are not revocable.
	var cas []caView
	e.admin("GET", "/v1/cas", nil, http.StatusOK, &cas)
	var root *x509.Certificate
	for _, c := range cas {
		if c.Team == "" {
			resp, body := e.do(nil, "POST", "/v1/cas/"+c.ID+"/revoke", e.adminToken, nil)
			wantProblem(t, resp, body, 409, slugConflict)
		}
		if c.Kind == "root" {
			certs, _ := ca.ParseCertsPEM([]byte(c.CertPEM))
			root = certs[0]
		}
	}

	var out struct {
		ID             string   `json:"id"`
		State          string   `json:"state"`
		RevokedSerials []string `json:"revoked_serials"`
		ReplacementID  string   `json:"replacement_id"`
	}
	e.admin("POST", "/v1/cas/"+oldCA+"/revoke", nil, http.StatusOK, &out)
	if out.State != "revoked" || !slices.Equal(out.RevokedSerials, []string{s.serial()}) || out.ReplacementID == "" || out.ReplacementID == oldCA {
		t.Fatalf("revoke answer %+v", out)
	}
	var rp revocationPayload
	verifyEvent(t, pub, ws.next(t, 2*time.Second), &rp)
	if !slices.Contains(rp.Serials, s.serial()) || !slices.Contains(rp.Serials, ca.SerialHex(oldInter.SerialNumber)) || rp.CAID != oldCA {
		t.Fatalf("event %+v", rp)
	}
	resp, body := e.do(nil, "POST", "/v1/cas/"+oldCA+"/revoke", e.adminToken, nil)
	wantProblem(t, resp, body, 409, slugConflict)

	// The team has a fresh intermediate and issues from it.
	var teams []teamView
	e.admin("GET", "/v1/teams", nil, http.StatusOK, &teams)
	for _, tm := range teams {
		if tm.Name == "shop" && tm.CAID != out.ReplacementID {
			t.Fatalf("team CA %s, want %s", tm.CAID, out.ReplacementID)
		}
	}
	fresh := e.fetch(token)
	if fresh.certs[1].Equal(oldInter) {
		t.Fatal("still issuing from the revoked intermediate")
	}

	// The revoked intermediate is on the root's CRL and OCSP says revoked;
	// its leaf is revoked too.
	var rootID string
	for _, c := range cas {
		if c.Kind == "root" {
			rootID = c.ID
		}
	}
	crl := e.crlOf(e.url+"/crl/"+rootID+".crl", root)
	if _, ok := crlHas(crl, oldInter.SerialNumber); !ok {
		t.Fatalf("root CRL lacks the revoked intermediate: %+v", crl.RevokedCertificateEntries)
	}
	if r := e.ocspQuery(oldInter, root, false); r.Status != ocsp.Revoked {
		t.Fatalf("intermediate ocsp status %d", r.Status)
	}
	if r := e.ocspQuery(fresh.certs[1], root, false); r.Status != ocsp.Good {
		t.Fatalf("fresh intermediate ocsp status %d", r.Status)
	}
	if r := e.ocspQuery(s.certs[0], oldInter, false); r.Status != ocsp.Revoked {
		t.Fatalf("leaf ocsp status %d", r.Status)
	}
	leafCRL := e.crlOf(s.certs[0].CRLDistributionPoints[0], oldInter)
	if _, ok := crlHas(leafCRL, s.certs[0].SerialNumber); !ok {
		t.Fatal("leaf not on its issuer's CRL")
	}
	// A chain through the revoked intermediate cannot authenticate.
	resp, body = e.renew(e.client(s.tlsCert()), s)
	wantProblem(t, resp, body, 403, slugRevoked)
}

// TestReplicasShareEvents runs two replicas on one store, connected by a
// bus (in memory, and a real embedded NATS): a team created on one issues
// on the other, and a revocation on one reaches a watcher of the other.
func TestReplicasShareEvents(t *testing.T) {
	for _, tc := range []struct {
		name string
		bus  func(t *testing.T) (Bus, Bus)
	}{
		{"memory", func(t *testing.T) (Bus, Bus) { b := newMemBus(); return b, b }},
		{"nats", func(t *testing.T) (Bus, Bus) {
			srv, err := bus.StartEmbedded(bus.EmbeddedConfig{Host: "127.0.0.1"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv.Shutdown)
			conn := func(name string) Bus {
				c, err := bus.Connect(context.Background(), srv.ClientURL(), nil, name)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(c.Close)
				return c
			}
			return conn("replica-1"), conn("replica-2")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b1, b2 := tc.bus(t)
			k := newKMS(t)
			st, res := initStore(t, t.TempDir(), k)
			slow := withTunables(func(tu *tunables) { tu.pollInterval = time.Hour }) // the bus, not the poll, must deliver
			e1 := startEnv(t, st, k, withBus(b1), slow)
			e1.adminToken = res.AdminToken
			e2 := startEnv(t, st, k, withBus(b2), slow)
			e2.adminToken = res.AdminToken

			token := e1.createService("shop", "web", "L2")
			w := e2.fetch(token)
			victim := e1.fetch(token)
			pub, _ := e2.signingKeyOf()
			ws, err := e2.watch(e2.client(w.tlsCert()), "")
			if err != nil {
				t.Fatal(err)
			}
			defer ws.close()
			ws.next(t, 5*time.Second)

			start := time.Now()
			e1.admin("POST", "/v1/svids/"+victim.serial()+"/revoke", nil, http.StatusOK, nil)
			var rp revocationPayload
			verifyEvent(t, pub, ws.next(t, 2*time.Second), &rp)
			t.Logf("revocation on replica 1 reached a watcher of replica 2 in %v", time.Since(start))
			if !slices.Equal(rp.Serials, []string{victim.serial()}) {
				t.Fatalf("event %+v", rp)
			}
			// Replica 2 refuses the revoked certificate too.
			resp, body := e2.renew(e2.client(victim.tlsCert()), victim)
			wantProblem(t, resp, body, 403, slugRevoked)
			// A root rotation on replica 2 reaches replica 1's bundle.
			e2.admin("POST", "/v1/cas/rotate", map[string]string{"kind": "root"}, http.StatusCreated, nil)
			waitFor(t, 2*time.Second, "bundle on replica 1", func() bool {
				return strings.Count(string(e1.a.BundlePEM()), "BEGIN CERTIFICATE") == 2
			})
		})
	}
}
