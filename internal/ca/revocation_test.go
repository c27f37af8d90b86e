package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

func TestCreateCRL(t *testing.T) {
	now := testNow()
	root, inter := newChain(t, now)
	a := issue(t, inter, now, time.Hour)
	b := issue(t, inter, now, time.Hour)

	for _, tc := range []struct {
		name    string
		signer  *Signer
		entries []x509.RevocationListEntry
		number  int64
	}{
		{"empty", inter, nil, 1},
		{"two entries", inter, []x509.RevocationListEntry{
			{SerialNumber: a.SerialNumber, RevocationTime: now, ReasonCode: 1},
			{SerialNumber: b.SerialNumber, RevocationTime: now.Add(time.Second)},
		}, 42},
		{"root", root, []x509.RevocationListEntry{{SerialNumber: inter.Cert.SerialNumber, RevocationTime: now, ReasonCode: 2}}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := tc.signer.CreateCRL(tc.entries, tc.number, now, now.Add(time.Hour))
			if err != nil {
				t.Fatalf("CreateCRL: %v", err)
			}
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				t.Fatal(err)
			}
			if err := crl.CheckSignatureFrom(tc.signer.Cert); err != nil {
				t.Errorf("CheckSignatureFrom: %v", err)
			}
			if crl.Number.Int64() != tc.number {
				t.Errorf("Number = %v, want %d", crl.Number, tc.number)
			}
			if !crl.ThisUpdate.Equal(now) || !crl.NextUpdate.Equal(now.Add(time.Hour)) {
				t.Errorf("ThisUpdate %v NextUpdate %v", crl.ThisUpdate, crl.NextUpdate)
			}
			if len(crl.RevokedCertificateEntries) != len(tc.entries) {
				t.Fatalf("%d entries, want %d", len(crl.RevokedCertificateEntries), len(tc.entries))
			}
			for i, e := range crl.RevokedCertificateEntries {
				want := tc.entries[i]
				if e.SerialNumber.Cmp(want.SerialNumber) != 0 || !e.RevocationTime.Equal(want.RevocationTime) || e.ReasonCode != want.ReasonCode {
					t.Errorf("entry %d = %v %v %d, want %v %v %d", i, e.SerialNumber, e.RevocationTime, e.ReasonCode,
						want.SerialNumber, want.RevocationTime, want.ReasonCode)
				}
			}
		})
	}

	for _, tc := range []struct {
		name    string
		signer  *Signer
		entries []x509.RevocationListEntry
		number  int64
		next    time.Time
	}{
		{"negative number", inter, nil, -1, now.Add(time.Hour)},
		{"next before this", inter, nil, 1, now.Add(-time.Second)},
		{"nil serial", inter, []x509.RevocationListEntry{{RevocationTime: now}}, 1, now.Add(time.Hour)},
		{"no revocation time", inter, []x509.RevocationListEntry{{SerialNumber: big.NewInt(1)}}, 1, now.Add(time.Hour)},
		{"nil signer", nil, nil, 1, now.Add(time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.signer.CreateCRL(tc.entries, tc.number, now, tc.next); err == nil {
				t.Fatal("CreateCRL succeeded")
			}
		})
	}
}

func TestOCSP(t *testing.T) {
	now := testNow()
	root, inter := newChain(t, now)
	leaf := issue(t, inter, now, time.Hour)

	reqDER, err := ocsp.CreateRequest(leaf, inter.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ParseOCSPRequest(reqDER)
	if err != nil {
		t.Fatalf("ParseOCSPRequest: %v", err)
	}
	if req.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("serial = %v", req.SerialNumber)
	}
	if !inter.OCSPRequestMatches(req) {
		t.Error("request does not match its issuer")
	}
	if root.OCSPRequestMatches(req) {
		t.Error("request matches another CA")
	}
	req256, err := ocsp.CreateRequest(leaf, inter.Cert, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	r256, err := ParseOCSPRequest(req256)
	if err != nil || !inter.OCSPRequestMatches(r256) {
		t.Errorf("SHA-256 request: %v, match %v", err, inter.OCSPRequestMatches(r256))
	}

	revokedAt := now.Add(-time.Minute)
	for _, tc := range []struct {
		name string
		st   OCSPStatus
	}{
		{"good", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Good, Now: now}},
		{"unknown", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Unknown, Now: now}},
		{"revoked", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Revoked, RevokedAt: revokedAt, Reason: ocsp.KeyCompromise, Now: now}},
		{"revoked unspecified", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Revoked, RevokedAt: revokedAt, Now: now}},
		{"next update", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Good, Now: now, NextUpdate: now.Add(5 * time.Minute)}},
		{"sha256 certid", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Good, Now: now, IssuerHash: crypto.SHA256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := inter.OCSPResponse(tc.st)
			if err != nil {
				t.Fatalf("OCSPResponse: %v", err)
			}
			resp, err := ocsp.ParseResponseForCert(der, leaf, inter.Cert) // checks the issuer's signature
			if err != nil {
				t.Fatalf("ParseResponseForCert: %v", err)
			}
			if resp.Status != tc.st.Status || resp.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				t.Errorf("status %d serial %v", resp.Status, resp.SerialNumber)
			}
			wantNext := tc.st.NextUpdate
			if wantNext.IsZero() {
				wantNext = now.Add(DefaultOCSPValidity)
			}
			if !resp.ThisUpdate.Equal(now) || !resp.NextUpdate.Equal(wantNext) {
				t.Errorf("ThisUpdate %v NextUpdate %v", resp.ThisUpdate, resp.NextUpdate)
			}
			if tc.st.Status == ocsp.Revoked && (!resp.RevokedAt.Equal(revokedAt) || resp.RevocationReason != tc.st.Reason) {
				t.Errorf("RevokedAt %v reason %d", resp.RevokedAt, resp.RevocationReason)
			}
			if resp.Certificate != nil {
				t.Error("response embeds a responder certificate; it is signed by the issuer itself")
			}
			if want := tc.st.IssuerHash; want != 0 && resp.IssuerHash != want {
				t.Errorf("IssuerHash = %v, want %v", resp.IssuerHash, want)
			}
		})
	}

	for _, tc := range []struct {
		name string
		st   OCSPStatus
	}{
		{"nil serial", OCSPStatus{Status: ocsp.Good, Now: now}},
		{"zero serial", OCSPStatus{Serial: big.NewInt(0), Status: ocsp.Good, Now: now}},
		{"bad status", OCSPStatus{Serial: leaf.SerialNumber, Status: 9, Now: now}},
		{"revoked without time", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Revoked, Now: now}},
		{"bad reason", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Revoked, RevokedAt: now, Reason: 7, Now: now}},
		{"next update in the past", OCSPStatus{Serial: leaf.SerialNumber, Status: ocsp.Good, Now: now, NextUpdate: now.Add(-time.Second)}},
	} {
		t.Run("reject "+tc.name, func(t *testing.T) {
			if _, err := inter.OCSPResponse(tc.st); err == nil {
				t.Fatal("OCSPResponse succeeded")
			}
		})
	}
}

func TestParseOCSPRequestRejects(t *testing.T) {
	now := testNow()
	_, inter := newChain(t, now)
	good, err := ocsp.CreateRequest(issue(t, inter, now, time.Hour), inter.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrOCSPRequestMalformed},
		{"garbage", []byte("GET / HTTP/1.1"), ErrOCSPRequestMalformed},
		{"truncated", good[:len(good)-3], ErrOCSPRequestMalformed},
		{"too large", make([]byte, MaxOCSPRequestSize+1), ErrOCSPRequestTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseOCSPRequest(tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
