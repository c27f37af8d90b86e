package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// These tests check ward's certificates, CRLs and OCSP responses with an
// independent implementation: the openssl command line tool.

func requireOpenSSL(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not in PATH")
	}
	return path
}

// openssl runs the openssl tool in dir and returns its combined output.
func openssl(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireOpenSSL(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenSSLVerify(t *testing.T) {
	requireOpenSSL(t)
	now := time.Now() // openssl checks validity against the wall clock
	root, inter := newChain(t, now)
	leaf := issue(t, inter, now, time.Hour)
	otherRoot, _ := newChain(t, now)

	dir := t.TempDir()
	writeFiles(t, dir, map[string][]byte{
		"root.pem":  EncodeCertsPEM(root.Cert),
		"int.pem":   EncodeCertsPEM(inter.Cert),
		"leaf.pem":  EncodeCertsPEM(leaf),
		"other.pem": EncodeCertsPEM(otherRoot.Cert),
	})
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"leaf", []string{"verify", "-CAfile", "root.pem", "-untrusted", "int.pem", "leaf.pem"}, true},
		{"leaf strict", []string{"verify", "-x509_strict", "-CAfile", "root.pem", "-untrusted", "int.pem", "leaf.pem"}, true},
		{"leaf as TLS server", []string{"verify", "-purpose", "sslserver", "-CAfile", "root.pem", "-untrusted", "int.pem", "leaf.pem"}, true},
		{"leaf as TLS client", []string{"verify", "-purpose", "sslclient", "-CAfile", "root.pem", "-untrusted", "int.pem", "leaf.pem"}, true},
		{"intermediate strict", []string{"verify", "-x509_strict", "-CAfile", "root.pem", "int.pem"}, true},
		{"root strict", []string{"verify", "-x509_strict", "-CAfile", "root.pem", "root.pem"}, true},
		{"leaf without intermediate", []string{"verify", "-CAfile", "root.pem", "leaf.pem"}, false},
		{"leaf against another root", []string{"verify", "-CAfile", "other.pem", "-untrusted", "int.pem", "leaf.pem"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := openssl(t, dir, tc.args...)
			ok := err == nil && strings.Contains(out, ": OK")
			if ok != tc.ok {
				t.Fatalf("openssl %s: ok=%v, want %v (err %v)\n%s", strings.Join(tc.args, " "), ok, tc.ok, err, out)
			}
		})
	}
}

func TestOpenSSLCRL(t *testing.T) {
	requireOpenSSL(t)
	now := time.Now()
	_, inter := newChain(t, now)
	revoked := issue(t, inter, now, time.Hour)
	kept := issue(t, inter, now, time.Hour)

	der, err := inter.CreateCRL([]x509.RevocationListEntry{
		{SerialNumber: revoked.SerialNumber, RevocationTime: now, ReasonCode: 1}, // keyCompromise
	}, 12, now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string][]byte{"crl.der": der, "int.pem": EncodeCertsPEM(inter.Cert)})

	out, err := openssl(t, dir, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	lower := strings.ToLower(out)
	for _, want := range []string{
		"serial number: " + opensslSerial(revoked.SerialNumber), // openssl prints upper-case hex, whole bytes
		"x509v3 crl number",
		"key compromise",
		"ward intermediate payments",
	} {
		if !strings.Contains(lower, want) {
			t.Errorf("openssl crl output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(lower, opensslSerial(kept.SerialNumber)) {
		t.Errorf("unrevoked serial listed:\n%s", out)
	}

	// openssl checks the CRL signature against the intermediate.
	out, err = openssl(t, dir, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-CAfile", "int.pem")
	if err != nil || !strings.Contains(out, "verify OK") {
		t.Fatalf("openssl crl -CAfile: %v\n%s", err, out)
	}
}

// ocspResponder is a minimal RFC 6960 responder over ParseOCSPRequest and
// OCSPResponse, as the authority serves it: the CA that issued the
// certificate signs the answer; a request about a CA it does not hold gets
// "unauthorized".
func ocspResponder(t *testing.T, signers []*Signer, revoked map[string]time.Time) http.Handler {
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxOCSPRequestSize))
		if err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		req, err := ParseOCSPRequest(body)
		if err != nil {
			w.Header().Set("Content-Type", "application/ocsp-response")
			w.Write(ocsp.MalformedRequestErrorResponse)
			return
		}
		var s *Signer
		for _, c := range signers {
			if c.OCSPRequestMatches(req) {
				s = c
			}
		}
		if s == nil {
			w.Header().Set("Content-Type", "application/ocsp-response")
			w.Write(ocsp.UnauthorizedErrorResponse)
			return
		}
		st := OCSPStatus{Serial: req.SerialNumber, Status: ocsp.Good, IssuerHash: req.HashAlgorithm}
		mu.Lock()
		at, isRevoked := revoked[SerialHex(req.SerialNumber)]
		mu.Unlock()
		if isRevoked {
			st.Status, st.RevokedAt, st.Reason = ocsp.Revoked, at, ocsp.KeyCompromise
		}
		resp, err := s.OCSPResponse(st)
		if err != nil {
			t.Errorf("OCSPResponse: %v", err)
			w.Write(ocsp.InternalErrorErrorResponse)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	})
}

func TestOpenSSLOCSP(t *testing.T) {
	requireOpenSSL(t)
	now := time.Now()
	root, inter := newChain(t, now)
	otherInter, err := NewIntermediate(root, testTD, "other", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	_, strangerInter := newChain(t, now)
	revokedLeaf := issue(t, inter, now, time.Hour)
	goodLeaf := issue(t, inter, now, time.Hour)
	otherLeaf := issue(t, otherInter, now, time.Hour)
	strangerLeaf := issue(t, strangerInter, now, time.Hour)

	srv := httptest.NewServer(ocspResponder(t, []*Signer{inter, otherInter}, map[string]time.Time{
		SerialHex(revokedLeaf.SerialNumber): now.Add(-time.Minute),
	}))
	defer srv.Close()

	dir := t.TempDir()
	writeFiles(t, dir, map[string][]byte{
		"root.pem":         EncodeCertsPEM(root.Cert),
		"int.pem":          EncodeCertsPEM(inter.Cert),
		"revoked.pem":      EncodeCertsPEM(revokedLeaf),
		"good.pem":         EncodeCertsPEM(goodLeaf),
		"other-int.pem":    EncodeCertsPEM(otherInter.Cert),
		"other.pem":        EncodeCertsPEM(otherLeaf),
		"stranger-int.pem": EncodeCertsPEM(strangerInter.Cert),
		"stranger.pem":     EncodeCertsPEM(strangerLeaf),
	})
	for _, tc := range []struct {
		name, issuer, cert string
		want               []string
		wantFail           bool
	}{
		{"revoked", "int.pem", "revoked.pem", []string{"Response verify OK", "revoked.pem: revoked", "Reason: keyCompromise"}, false},
		{"good", "int.pem", "good.pem", []string{"Response verify OK", "good.pem: good"}, false},
		{"second intermediate", "other-int.pem", "other.pem", []string{"Response verify OK", "other.pem: good"}, false},
		{"unknown CA", "stranger-int.pem", "stranger.pem", []string{"unauthorized"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"ocsp", "-issuer", tc.issuer, "-cert", tc.cert, "-url", srv.URL + "/", "-CAfile", "root.pem", "-resp_text"}
			out, err := openssl(t, dir, args...)
			if (err != nil) != tc.wantFail {
				t.Fatalf("openssl %s: err = %v, want failure %v\n%s", strings.Join(args, " "), err, tc.wantFail, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("openssl output lacks %q:\n%s", want, out)
				}
			}
		})
	}

	// A malformed request gets a malformedRequest response, not a crash.
	resp, err := http.Post(srv.URL, "application/ocsp-request", strings.NewReader("junk"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if _, err := ocsp.ParseResponse(body, nil); !errors.As(err, new(ocsp.ResponseError)) {
		t.Errorf("junk request: %v", err)
	}
}

// opensslSerial is how openssl prints a serial: lower-cased here, in whole
// bytes (an odd number of hex digits gets a leading zero).
func opensslSerial(n *big.Int) string {
	h := SerialHex(n)
	if len(h)%2 == 1 {
		h = "0" + h
	}
	return h
}
