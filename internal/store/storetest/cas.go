package storetest

import (
	"bytes"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store"
)

func testCA(id, kind, team, parent, state string, created time.Time) store.CA {
	return store.CA{
		ID: id, Kind: kind, Team: team, ParentID: parent,
		CertDER: []byte("der-" + id), KeyCiphertext: []byte{0, 1, 2, 0xff},
		State: state, CreatedAt: created, NotAfter: created.Add(365 * 24 * time.Hour),
	}
}

func wantCA(t *testing.T, got, want store.CA) {
	t.Helper()
	if got.ID != want.ID || got.Kind != want.Kind || got.Team != want.Team || got.ParentID != want.ParentID || got.State != want.State {
		t.Errorf("CA = %+v, want %+v", got, want)
	}
	if !bytes.Equal(got.CertDER, want.CertDER) || !bytes.Equal(got.KeyCiphertext, want.KeyCiphertext) {
		t.Errorf("CA %s bytes = %x/%x, want %x/%x", want.ID, got.CertDER, got.KeyCiphertext, want.CertDER, want.KeyCiphertext)
	}
	wantTime(t, "CA.CreatedAt", got.CreatedAt, want.CreatedAt)
	wantTime(t, "CA.NotAfter", got.NotAfter, want.NotAfter)
	wantTimePtr(t, "CA.RevokedAt", got.RevokedAt, want.RevokedAt)
}

func testCAs(t *testing.T, st *store.Store) {
	ctx := t.Context()
	root := testCA("root-1", store.CAKindRoot, "", "", store.CAStateActive, at(0))
	cas := []store.CA{
		testCA("int-c", store.CAKindIntermediate, "payments", "root-1", store.CAStatePrepared, at(2*time.Hour)),
		root,
		testCA("int-b", store.CAKindIntermediate, "", "root-1", store.CAStateActive, at(time.Hour)),
		testCA("int-a", store.CAKindIntermediate, "", "root-1", store.CAStateActive, at(time.Hour)),
	}
	revoked := testCA("int-r", store.CAKindIntermediate, "shop", "root-1", store.CAStateRevoked, at(3*time.Hour))
	revoked.RevokedAt = ptr(at(4 * time.Hour))
	cas = append(cas, revoked)
	for _, ca := range cas {
		must(t, st.CreateCA(ctx, ca))
	}

	for _, ca := range cas {
		got, err := st.GetCA(ctx, ca.ID)
		must(t, err)
		wantCA(t, got, ca)
	}

	errTests := []struct {
		name   string
		ca     store.CA
		target error
	}{
		{"duplicate ID", testCA("root-1", store.CAKindRoot, "", "", store.CAStateActive, at(0)), store.ErrConflict},
		{"unknown kind", testCA("x", "leaf", "", "", store.CAStateActive, at(0)), nil},
		{"unknown state", testCA("y", store.CAKindRoot, "", "", "dormant", at(0)), nil},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			err := st.CreateCA(ctx, tt.ca)
			if err == nil {
				t.Fatal("CreateCA succeeded")
			}
			if tt.target != nil {
				wantErr(t, "CreateCA", err, tt.target)
			}
		})
	}

	_, err := st.GetCA(ctx, "missing")
	wantErr(t, "GetCA(missing)", err, store.ErrNotFound)

	list, err := st.ListCAs(ctx)
	must(t, err)
	var ids []string
	for _, ca := range list {
		ids = append(ids, ca.ID)
	}
	if want := []string{"root-1", "int-a", "int-b", "int-c", "int-r"}; !slices.Equal(ids, want) {
		t.Errorf("ListCAs order = %v, want %v", ids, want)
	}
	for _, ca := range list {
		if ca.ID == "int-c" {
			wantCA(t, ca, cas[0])
		}
	}
}

func testCAState(t *testing.T, st *store.Store) {
	ctx := t.Context()
	must(t, st.CreateCA(ctx, testCA("int-1", store.CAKindIntermediate, "payments", "root-1", store.CAStatePrepared, at(0))))

	steps := []struct {
		name      string
		state     string
		revokedAt *time.Time
		wantAt    *time.Time
	}{
		{"activate", store.CAStateActive, nil, nil},
		{"retiring", store.CAStateRetiring, nil, nil},
		{"revoke", store.CAStateRevoked, ptr(at(time.Hour)), ptr(at(time.Hour))},
		{"revoke again keeps the first time", store.CAStateRevoked, ptr(at(2 * time.Hour)), ptr(at(time.Hour))},
		{"nil leaves the time", store.CAStateRetired, nil, ptr(at(time.Hour))},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			must(t, st.SetCAState(ctx, "int-1", tt.state, tt.revokedAt))
			got, err := st.GetCA(ctx, "int-1")
			must(t, err)
			if got.State != tt.state {
				t.Errorf("State = %q, want %q", got.State, tt.state)
			}
			wantTimePtr(t, "RevokedAt", got.RevokedAt, tt.wantAt)
		})
	}

	wantErr(t, "SetCAState(missing)", st.SetCAState(ctx, "missing", store.CAStateActive, nil), store.ErrNotFound)
	if err := st.SetCAState(ctx, "int-1", "dormant", nil); err == nil {
		t.Error("SetCAState accepted an unknown state")
	}
}

func testCRLNumber(t *testing.T, st *store.Store) {
	ctx := t.Context()
	must(t, st.CreateCA(ctx, testCA("a", store.CAKindIntermediate, "", "r", store.CAStateActive, at(0))))
	must(t, st.CreateCA(ctx, testCA("b", store.CAKindIntermediate, "", "r", store.CAStateActive, at(0))))
	for want := int64(1); want <= 3; want++ {
		n, err := st.NextCRLNumber(ctx, "a")
		must(t, err)
		if n != want {
			t.Errorf("NextCRLNumber(a) = %d, want %d", n, want)
		}
	}
	_, err := st.NextCRLNumber(ctx, "missing")
	wantErr(t, "NextCRLNumber(missing)", err, store.ErrNotFound)

	// Concurrent callers each get a distinct number, and together 1..N.
	const workers, each = 8, 10
	var (
		mu  sync.Mutex
		got []int64
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for range each {
				n, err := st.NextCRLNumber(ctx, "b")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, n)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	for i, n := range got {
		if n != int64(i+1) {
			t.Fatalf("concurrent CRL numbers = %v, want 1..%d", got, workers*each)
		}
	}
}
