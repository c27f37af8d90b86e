package storetest

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

func testCert(serial, service, issuer string, notBefore time.Time, ttl time.Duration) store.Certificate {
	return store.Certificate{
		Serial: serial, Service: service, SPIFFEID: "spiffe://ward.test/svc/" + service,
		InstanceID: "inst-" + serial, IssuerID: issuer,
		NotBefore: notBefore, NotAfter: notBefore.Add(ttl), DER: []byte("der-" + serial),
	}
}

func wantCert(t *testing.T, got, want store.Certificate) {
	t.Helper()
	if got.Serial != want.Serial || got.Service != want.Service || got.SPIFFEID != want.SPIFFEID ||
		got.InstanceID != want.InstanceID || got.IssuerID != want.IssuerID || got.RevocationReason != want.RevocationReason ||
		!bytes.Equal(got.DER, want.DER) {
		t.Errorf("certificate = %+v, want %+v", got, want)
	}
	wantTime(t, "NotBefore", got.NotBefore, want.NotBefore)
	wantTime(t, "NotAfter", got.NotAfter, want.NotAfter)
	wantTimePtr(t, "RevokedAt", got.RevokedAt, want.RevokedAt)
}

func testCertificates(t *testing.T, st *store.Store) {
	ctx := t.Context()
	certs := []store.Certificate{
		testCert("1a2b", "web", "int-1", at(0), time.Hour),
		testCert("ff00ff00ff00ff00ff00ff00ff00ff00", "db", "int-1", at(time.Minute), 15*time.Minute),
		// ward's own component certificates belong to no registered service.
		testCert("c0ffee", "", "int-1", at(0), 24*time.Hour),
	}
	preRevoked := testCert("dead", "web", "int-1", at(0), time.Hour)
	preRevoked.RevokedAt, preRevoked.RevocationReason = ptr(at(time.Second)), 1
	certs = append(certs, preRevoked)
	for _, c := range certs {
		must(t, st.InsertCertificate(ctx, c))
	}
	wantErr(t, "InsertCertificate(dup)", st.InsertCertificate(ctx, testCert("1a2b", "other", "int-2", at(0), time.Hour)), store.ErrConflict)

	for _, c := range certs {
		got, err := st.GetCertificate(ctx, c.Serial)
		must(t, err)
		wantCert(t, got, c)
	}
	_, err := st.GetCertificate(ctx, "missing")
	wantErr(t, "GetCertificate(missing)", err, store.ErrNotFound)
}

func testRevokeCertificate(t *testing.T, st *store.Store) {
	ctx := t.Context()
	c := testCert("abc", "web", "int-1", at(0), time.Hour)
	must(t, st.InsertCertificate(ctx, c))

	steps := []struct {
		name   string
		at     time.Time
		reason int
	}{
		{"revoke", at(time.Minute), 1},                     // keyCompromise
		{"again keeps the first", at(2 * time.Minute), 4},  // superseded
		{"and again keeps the first", at(-time.Minute), 5}, // even if earlier
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			must(t, st.RevokeCertificate(ctx, "abc", tt.at, tt.reason))
			got, err := st.GetCertificate(ctx, "abc")
			must(t, err)
			want := c
			want.RevokedAt, want.RevocationReason = ptr(at(time.Minute)), 1
			wantCert(t, got, want)
		})
	}
	wantErr(t, "RevokeCertificate(missing)", st.RevokeCertificate(ctx, "missing", at(0), 1), store.ErrNotFound)
}

func testRevokeCertificatesBulk(t *testing.T, st *store.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	certs := []store.Certificate{
		testCert("w2", "web", "int-1", at(50*time.Minute), time.Hour),
		testCert("w1", "web", "int-2", at(55*time.Minute), time.Hour),
		testCert("w-expired", "web", "int-1", at(0), 30*time.Minute),
		testCert("w-revoked", "web", "int-1", at(50*time.Minute), time.Hour),
		testCert("d1", "db", "int-1", at(50*time.Minute), time.Hour),
		testCert("d2", "db", "int-2", at(50*time.Minute), time.Hour),
	}
	for _, c := range certs {
		must(t, st.InsertCertificate(ctx, c))
	}
	must(t, st.RevokeCertificate(ctx, "w-revoked", at(55*time.Minute), 1))

	steps := []struct {
		name   string
		revoke func() ([]string, error)
		want   []string
	}{
		{"by service", func() ([]string, error) { return st.RevokeCertificatesByService(ctx, "web", now, 4) }, []string{"w1", "w2"}},
		{"by service again", func() ([]string, error) { return st.RevokeCertificatesByService(ctx, "web", now, 4) }, nil},
		{"by unknown service", func() ([]string, error) { return st.RevokeCertificatesByService(ctx, "nope", now, 4) }, nil},
		{"by issuer", func() ([]string, error) { return st.RevokeCertificatesByIssuer(ctx, "int-2", now, 2) }, []string{"d2"}},
		{"by issuer again", func() ([]string, error) { return st.RevokeCertificatesByIssuer(ctx, "int-2", now, 2) }, nil},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.revoke()
			must(t, err)
			if len(got) != 0 || len(tt.want) != 0 {
				if !slices.Equal(got, tt.want) {
					t.Errorf("revoked %v, want %v", got, tt.want)
				}
			}
		})
	}

	wantState := []struct {
		serial string
		at     *time.Time
		reason int
	}{
		{"w1", ptr(now), 4},
		{"w2", ptr(now), 4},
		{"w-expired", nil, 0},
		{"w-revoked", ptr(at(55 * time.Minute)), 1},
		{"d1", nil, 0},
		{"d2", ptr(now), 2},
	}
	for _, w := range wantState {
		got, err := st.GetCertificate(ctx, w.serial)
		must(t, err)
		wantTimePtr(t, w.serial+" RevokedAt", got.RevokedAt, w.at)
		if got.RevocationReason != w.reason {
			t.Errorf("%s reason = %d, want %d", w.serial, got.RevocationReason, w.reason)
		}
	}
}

func testRevocationLists(t *testing.T, st *store.Store) {
	ctx := t.Context()
	now := at(time.Hour)
	certs := []store.Certificate{
		testCert("b-live-revoked", "web", "int-1", at(50*time.Minute), time.Hour),
		testCert("a-live-revoked", "db", "int-1", at(50*time.Minute), time.Hour),
		testCert("c-live", "web", "int-1", at(50*time.Minute), time.Hour),
		testCert("d-expired-revoked", "web", "int-1", at(0), 30*time.Minute),
		testCert("e-expired", "web", "int-1", at(0), 30*time.Minute),
		testCert("f-other-issuer-revoked", "web", "int-2", at(50*time.Minute), time.Hour),
		testCert("g-other-issuer-live", "web", "int-2", at(50*time.Minute), time.Hour),
		testCert("h-expires-now-revoked", "web", "int-1", at(0), time.Hour), // NotAfter == now: expired
	}
	for _, c := range certs {
		must(t, st.InsertCertificate(ctx, c))
	}
	for _, serial := range []string{"b-live-revoked", "a-live-revoked", "d-expired-revoked", "f-other-issuer-revoked", "h-expires-now-revoked"} {
		must(t, st.RevokeCertificate(ctx, serial, at(10*time.Minute), 1))
	}

	crl, err := st.ListRevokedCertificates(ctx, "int-1", now)
	must(t, err)
	var serials []string
	for _, c := range crl {
		serials = append(serials, c.Serial)
		if c.RevokedAt == nil || c.RevocationReason != 1 || c.IssuerID != "int-1" {
			t.Errorf("CRL entry %+v", c)
		}
	}
	if want := []string{"a-live-revoked", "b-live-revoked"}; !slices.Equal(serials, want) {
		t.Errorf("ListRevokedCertificates(int-1) = %v, want %v", serials, want)
	}
	crl, err = st.ListRevokedCertificates(ctx, "int-3", now)
	must(t, err)
	if len(crl) != 0 {
		t.Errorf("ListRevokedCertificates(int-3) = %v, want none", crl)
	}

	all, err := st.ListRevokedSerials(ctx, now)
	must(t, err)
	if want := []string{"a-live-revoked", "b-live-revoked", "f-other-issuer-revoked"}; !slices.Equal(all, want) {
		t.Errorf("ListRevokedSerials = %v, want %v", all, want)
	}
	all, err = st.ListRevokedSerials(ctx, at(0))
	must(t, err)
	if len(all) != 5 {
		t.Errorf("ListRevokedSerials(before anything expired) = %v, want 5 serials", all)
	}

	counts := []struct {
		issuer string
		now    time.Time
		want   int
	}{
		{"int-1", now, 1},   // c-live
		{"int-2", now, 1},   // g-other-issuer-live
		{"int-1", at(0), 2}, // c-live, e-expired not yet expired
		{"int-1", at(3 * time.Hour), 0},
		{"int-3", now, 0},
	}
	for _, tt := range counts {
		n, err := st.CountActiveCertificates(ctx, tt.issuer, tt.now)
		must(t, err)
		if n != tt.want {
			t.Errorf("CountActiveCertificates(%s, %v) = %d, want %d", tt.issuer, tt.now, n, tt.want)
		}
	}
}
