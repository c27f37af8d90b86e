package collector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/store/storetest"
)

// TestStoreBackends runs the store's contract on SQLite and, when
// WARD_TEST_POSTGRES_DSN is set, PostgreSQL.
func TestStoreBackends(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testStore(t, filepath.Join(t.TempDir(), "a.db")) })
	t.Run("postgres", func(t *testing.T) { testStore(t, storetest.PostgresDSN(t)) })
	t.Run("sqlite/conflicts", func(t *testing.T) { testConflicts(t, filepath.Join(t.TempDir(), "a.db")) })
	t.Run("postgres/conflicts", func(t *testing.T) { testConflicts(t, storetest.PostgresDSN(t)) })
}

// testConflicts: batches mixing stored and new events, and a chain head
// moved by another writer under a batch.
func testConflicts(t *testing.T, dsn string) {
	ctx := context.Background()
	st, err := OpenStore(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev := func(i int) Incoming {
		return Incoming{Source: "h", MsgID: fmt.Sprint("m", i), Data: []byte(`{"v":1,"kind":"k","time":"2026-11-24T00:00:00Z"}`)}
	}
	if _, _, err := st.Insert(ctx, []Incoming{ev(0), ev(1)}); err != nil {
		t.Fatal(err)
	}
	hashes, dups, err := st.Insert(ctx, []Incoming{ev(1), ev(2), ev(0), ev(3)})
	if err != nil || len(hashes) != 2 || dups != 2 {
		t.Fatalf("mixed batch: %d hashes, %d dups, %v", len(hashes), dups, err)
	}
	// Another collector moves the head between this one's read and write:
	// simulated by a head that no longer matches the stored chain.
	if _, err := st.db.ExecContext(ctx, st.q(`UPDATE heads SET seq = seq + 1 WHERE source = ?`), "h"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Insert(ctx, []Incoming{ev(4)}); err != nil {
		t.Fatal(err) // it chains on the head it reads, consistently
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if res, _ := st.Verify(ctx, VerifierKey("o", key.Public().(ed25519.PublicKey))); !strings.Contains(res.Broken, "sequence") {
		t.Fatalf("a chain gap went unnoticed: %+v", res)
	}
}

func testStore(t *testing.T, dsn string) {
	ctx := context.Background()
	st, err := OpenStore(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev := func(i int, src string) Incoming {
		return Incoming{Source: src, MsgID: fmt.Sprintf("%s-%d", src, i),
			Data: []byte(fmt.Sprintf(`{"v":1,"kind":"authz.decision","time":"2026-11-24T00:00:%02dZ","cid":"c%d","user":"u%d","decision":"allow"}`, i%60, i%3, i))}
	}
	var batch []Incoming
	for i := range 10 {
		batch = append(batch, ev(i, "h1"), ev(i, "h2"))
	}
	batch = append(batch, Incoming{Source: "h1", MsgID: "garbage", Data: []byte("\x00 not json")})
	hashes, dups, err := st.Insert(ctx, batch)
	if err != nil || len(hashes) != 21 || dups != 0 {
		t.Fatalf("insert: %d hashes, %d dups, %v", len(hashes), dups, err)
	}
	// Redelivered: nothing stored twice.
	hashes, dups, err = st.Insert(ctx, batch[:5])
	if err != nil || len(hashes) != 0 || dups != 5 {
		t.Fatalf("redelivery: %d hashes, %d dups, %v", len(hashes), dups, err)
	}
	if n, _ := st.Count(ctx); n != 21 {
		t.Fatalf("count %d", n)
	}
	rows, err := st.Find(ctx, Query{CorrelationID: "c1", Decision: "allow", Since: time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)})
	if err != nil || len(rows) != 6 {
		t.Fatalf("find c1: %d %v", len(rows), err)
	}
	rows, _ = st.Find(ctx, Query{User: "u3"})
	if len(rows) != 2 {
		t.Fatalf("find u3: %d", len(rows))
	}
	// Checkpoint, verify, tamper.
	var tr tree
	if err := st.allHashes(ctx, func(_ int64, h []byte) error { tr.append(h); return nil }); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cp := Checkpoint{Origin: "ward.test/audit", Size: tr.size, Root: tr.root()}
	if err := st.AddCheckpoint(ctx, cp.Size, SignNote(cp.Text(), cp.Origin, key), time.Now()); err != nil {
		t.Fatal(err)
	}
	vk := VerifierKey(cp.Origin, key.Public().(ed25519.PublicKey))
	if res, err := st.Verify(ctx, vk); err != nil || res.Broken != "" || res.Events != 21 || res.Checkpoints != 1 {
		t.Fatalf("verify: %+v %v", res, err)
	}
	if _, err := st.db.ExecContext(ctx, st.q(`DELETE FROM events WHERE msg_id = ?`), "h2-9"); err != nil {
		t.Fatal(err)
	}
	if res, _ := st.Verify(ctx, vk); !strings.Contains(res.Broken, "does not link") && !strings.Contains(res.Broken, "sequence") && !strings.Contains(res.Broken, "deleted") {
		t.Fatalf("deleted event verified: %+v", res)
	}
}

// Events whose clocks are wrong are stored as they are (in arrival
// order, chained) and found; the time range filters on their own time.
func TestClockSkew(t *testing.T) {
	ctx := context.Background()
	st, err := OpenStore(ctx, filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var batch []Incoming
	for i, ts := range []string{"2099-01-01T00:00:00Z", "1970-01-01T00:00:01Z", "2026-11-24T00:00:00Z"} {
		batch = append(batch, Incoming{Source: "h", MsgID: fmt.Sprint(i), Data: []byte(`{"v":1,"kind":"k","cid":"skew","time":"` + ts + `"}`)})
	}
	if _, _, err := st.Insert(ctx, batch); err != nil {
		t.Fatal(err)
	}
	rows, _ := st.Find(ctx, Query{CorrelationID: "skew"})
	if len(rows) != 3 || !strings.Contains(string(rows[0].Event), "1970") || !strings.Contains(string(rows[2].Event), "2099") {
		t.Fatalf("skewed events: %d", len(rows))
	}
	rows, _ = st.Find(ctx, Query{Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)})
	if len(rows) != 1 {
		t.Fatalf("time range: %d", len(rows))
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if res, err := st.Verify(ctx, VerifierKey("o", key.Public().(ed25519.PublicKey))); err != nil || res.Broken != "" || res.Events != 3 {
		t.Fatalf("verify: %+v %v", res, err)
	}
}

// A database written before the heads table existed (a unique (source,
// seq) index, no heads) gets its heads built on open and chains on.
func TestHeadsMigration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	st, err := OpenStore(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var batch []Incoming
	for i := range 6 {
		batch = append(batch, Incoming{Source: fmt.Sprintf("h%d", i%2), MsgID: fmt.Sprint(i), Data: []byte(`{"v":1,"kind":"k","time":"2026-11-24T00:00:00Z"}`)})
	}
	if _, _, err := st.Insert(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// Make it look old: no heads, no marker, the old unique index.
	for _, q := range []string{`DELETE FROM heads`, `DELETE FROM meta`, `CREATE UNIQUE INDEX events_source_seq ON events (source, seq)`} {
		if _, err := st.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	st, err = OpenStore(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var seq int64
	if err := st.db.QueryRowContext(ctx, `SELECT seq FROM heads WHERE source = 'h1'`).Scan(&seq); err != nil || seq != 3 {
		t.Fatalf("head of h1: %d %v", seq, err)
	}
	if _, _, err := st.Insert(ctx, []Incoming{{Source: "h1", MsgID: "6", Data: []byte(`{"v":1,"kind":"k","time":"2026-11-24T00:00:00Z"}`)}}); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if res, err := st.Verify(ctx, VerifierKey("o", key.Public().(ed25519.PublicKey))); err != nil || res.Broken != "" || res.Events != 7 {
		t.Fatalf("verify after migration: %+v %v", res, err)
	}
}

// Two collectors writing the same source at once (PostgreSQL, where they
// really run concurrently): one of two racing batches is refused and
// retried, and the chain never forks.
func TestConcurrentCollectorsKeepOneChain(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	ctx := context.Background()
	st1, err := OpenStore(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st1.Close()
	st2, err := OpenStore(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	done := make(chan error, 2)
	for w, st := range []*Store{st1, st2} {
		go func() {
			for i := range 30 {
				in := []Incoming{{Source: "h", MsgID: fmt.Sprintf("w%d-%d", w, i), Data: []byte(`{"v":1,"kind":"k","time":"2026-11-24T00:00:00Z"}`)}}
				for attempt := 0; ; attempt++ {
					if _, _, err := st.Insert(ctx, in); err == nil {
						break
					} else if attempt > 50 {
						done <- err
						return
					}
				}
			}
			done <- nil
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if res, err := st1.Verify(ctx, VerifierKey("o", key.Public().(ed25519.PublicKey))); err != nil || res.Broken != "" || res.Events != 60 {
		t.Fatalf("verify: %+v %v", res, err)
	}
}
