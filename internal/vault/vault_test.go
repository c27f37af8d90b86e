package vault

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wardsec/ward/internal/kms"
)

func newVault(t testing.TB, mod func(*Config)) (*Vault, string) {
	t.Helper()
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	k, err := kms.NewLocal(kek)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vault.db")
	cfg := Config{DB: path, KMS: k}
	if mod != nil {
		mod(&cfg)
	}
	v, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v, path
}

func TestTokenShapes(t *testing.T) {
	for _, tc := range []struct{ typ, value, norm string }{
		{TypePAN, "4111 1111 1111 1111", "4111111111111111"},
		{TypePAN, "378282246310005", "378282246310005"},
		{TypeSSN, "123456789", "123-45-6789"},
		{TypeEmail, "Bob@Example.COM", "Bob@example.com"},
		{TypePassport, "x1234567 ", "X1234567"},
		{TypeGeneric, "anything at all", "anything at all"},
	} {
		norm, err := Normalize(tc.typ, tc.value)
		if err != nil || norm != tc.norm {
			t.Fatalf("%s %q: %q %v", tc.typ, tc.value, norm, err)
		}
		for range 50 {
			tok, err := newToken(tc.typ, norm, true)
			if err != nil {
				t.Fatal(err)
			}
			if err := ParseToken(tc.typ, tok); err != nil {
				t.Fatalf("%s token %q: %v", tc.typ, tok, err)
			}
			if typ, ok := TypeOf(tok); !ok || typ != tc.typ {
				t.Fatalf("TypeOf(%q) = %s %v, want %s", tok, typ, ok, tc.typ)
			}
			if tc.typ == TypePAN && (len(tok) != len(norm) || tok[len(tok)-4:] != norm[len(norm)-4:] || luhn([]byte(tok))) {
				t.Fatalf("card token %q of %q", tok, norm)
			}
			if tc.typ == TypeEmail && !strings.HasSuffix(tok, "@example.com") {
				t.Fatalf("email token %q", tok)
			}
		}
	}
	for _, tc := range []struct{ typ, value string }{
		{TypePAN, "4111111111111112"}, {TypePAN, "4111"}, {TypePAN, "4111x11111111111"},
		{TypeSSN, "000-12-3456"}, {TypeSSN, "666-12-3456"}, {TypeSSN, "912-12-3456"}, {TypeSSN, "12-345-6789"},
		{TypeEmail, "no-at-sign"}, {TypeEmail, "a@b"}, {TypePassport, "12"}, {TypeGeneric, ""}, {TypeGeneric, "\xff"},
		{"iban", "x"},
	} {
		if _, err := Normalize(tc.typ, tc.value); err == nil {
			t.Fatalf("%s %q accepted", tc.typ, tc.value)
		}
	}
	if err := ParseToken(TypePAN, "4111111111111111"); err == nil {
		t.Fatal("a real card number parsed as a card token")
	}
}

func TestTokenizeDetokenize(t *testing.T) {
	ctx := context.Background()
	v, path := newVault(t, func(c *Config) { c.Deterministic = []string{TypeEmail} })
	toks, err := v.Tokenize(ctx, TypePAN, []Item{{Value: "4111111111111111", Subject: "u1"}, {Value: "5555555555554444"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := v.Tokenize(ctx, TypePAN, []Item{{Value: "4111111111111111", Subject: "u1"}}, 0)
	if again[0] == toks[0] {
		t.Fatal("random tokens repeat")
	}
	e1, _ := v.Tokenize(ctx, TypeEmail, []Item{{Value: "bob@example.com", Subject: "u1"}}, 0)
	e2, _ := v.Tokenize(ctx, TypeEmail, []Item{{Value: "bob@EXAMPLE.com", Subject: "u1"}, {Value: "bob@example.com", Subject: "u2"}}, 0)
	if e1[0] != e2[0] || e2[1] == e1[0] {
		t.Fatalf("deterministic tokens %v %v", e1, e2)
	}
	out, err := v.Detokenize(ctx, TypePAN, append(toks, "4111111111111110"))
	if err != nil || out[0].Value != "4111111111111111" || out[0].Subject != "u1" || out[1].Value != "5555555555554444" || out[2].Error != "not-found" {
		t.Fatalf("detokenize %+v %v", out, err)
	}
	if _, err := v.Detokenize(ctx, TypeSSN, toks); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("a card token as an SSN token: %v", err)
	}
	big := make([]string, MaxBatch+1)
	if _, err := v.Detokenize(ctx, TypePAN, big); !errors.Is(err, ErrTooMany) {
		t.Fatalf("oversized batch: %v", err)
	}
	// No value is in the database file in clear.
	v.st.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
	data, _ := os.ReadFile(path)
	for _, s := range []string{"4111111111111111", "5555555555554444", "bob@example.com"} {
		if bytes.Contains(data, []byte(s)) {
			t.Fatalf("%s is readable in the database file", s)
		}
	}
	// Metadata, delete.
	md, err := v.Metadata(ctx, TypePAN, toks[0])
	if err != nil || md.Subject != "u1" || md.Deterministic || md.KEKVersion != 1 {
		t.Fatalf("metadata %+v %v", md, err)
	}
	if err := v.Delete(ctx, TypePAN, toks[1]); err != nil {
		t.Fatal(err)
	}
	if err := v.Delete(ctx, TypePAN, toks[1]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestExpiryTamperAndMissingKey(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	v, _ := newVault(t, func(c *Config) { c.Now = func() time.Time { return now } })
	toks, err := v.Tokenize(ctx, TypeSSN, []Item{{Value: "123-45-6789"}, {Value: "234-56-7890"}, {Value: "345-67-8901"}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// Tampered ciphertext, and a record under a key version that is gone.
	if _, err := v.st.db.ExecContext(ctx, `UPDATE vault_tokens SET ct = ct || x'00' WHERE token = ?`, toks[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := v.st.db.ExecContext(ctx, `UPDATE vault_tokens SET kek = 99 WHERE token = ?`, toks[2]); err != nil {
		t.Fatal(err)
	}
	out, _ := v.Detokenize(ctx, TypeSSN, toks)
	if out[0].Value != "123-45-6789" || out[1].Error != "unreadable" || out[1].Value != "" || out[2].Error != "unreadable" {
		t.Fatalf("detokenize %+v", out)
	}
	now = now.Add(2 * time.Minute)
	if out, _ := v.Detokenize(ctx, TypeSSN, toks[:1]); out[0].Error != "not-found" {
		t.Fatalf("expired token revealed: %+v", out)
	}
}

func TestEraseCryptoShreds(t *testing.T) {
	ctx := context.Background()
	v, path := newVault(t, nil)
	mine, _ := v.Tokenize(ctx, TypeEmail, []Item{{Value: "alice@example.com", Subject: "alice"}, {Value: "alice@work.example", Subject: "alice"}}, 0)
	other, _ := v.Tokenize(ctx, TypeEmail, []Item{{Value: "carol@example.com", Subject: "carol"}}, 0)
	exp, err := v.Export(ctx, TypeEmail, "alice")
	if err != nil || len(exp) != 2 {
		t.Fatalf("export %+v %v", exp, err)
	}
	n, err := v.Erase(ctx, TypeEmail, "alice")
	if err != nil || n != 2 {
		t.Fatalf("erase: %d %v", n, err)
	}
	out, _ := v.Detokenize(ctx, TypeEmail, append(mine, other...))
	if out[0].Error == "" || out[1].Error == "" || out[2].Value != "carol@example.com" {
		t.Fatalf("after erase %+v", out)
	}
	if exp, _ := v.Export(ctx, TypeEmail, "alice"); len(exp) != 0 {
		t.Fatalf("export after erase %+v", exp)
	}
	// The keys are gone from the file, not only marked: no wrapped key
	// or ciphertext of alice's values is left to try with any key.
	var wdek, ct []byte
	v.st.db.QueryRowContext(ctx, `SELECT wdek, ct FROM vault_tokens WHERE token = ?`, mine[0]).Scan(&wdek, &ct)
	if len(wdek) == 0 || !bytes.Equal(wdek, make([]byte, len(wdek))) || !bytes.Equal(ct, make([]byte, len(ct))) {
		t.Fatal("erased key material is still stored")
	}
	data, _ := os.ReadFile(path)
	if wal, err := os.ReadFile(path + "-wal"); err == nil && len(wal) > 0 {
		t.Fatalf("the WAL still holds %d bytes after erase", len(wal))
	}
	if bytes.Contains(data, []byte("alice@")) {
		t.Fatal("a value in clear")
	}
}

// TestRotateUnderLoad: rotating the key-encryption key while requests
// run loses no value and fails no request.
func TestRotateUnderLoad(t *testing.T) {
	ctx := context.Background()
	v, _ := newVault(t, nil)
	var items []Item
	for i := range 2000 {
		items = append(items, Item{Value: fmt.Sprintf("value-%d", i)})
	}
	var toks []string
	for i := 0; i < len(items); i += 500 {
		t2, err := v.Tokenize(ctx, TypeGeneric, items[i:i+500], 0)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, t2...)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := v.Tokenize(ctx, TypeGeneric, []Item{{Value: fmt.Sprintf("new-%d-%d", w, i)}}, 0); err != nil {
					errs <- err
					return
				}
				j := (i * 7) % len(toks)
				out, err := v.Detokenize(ctx, TypeGeneric, toks[j:j+1])
				if err != nil || out[0].Value != items[j].Value {
					errs <- fmt.Errorf("detokenize %d during rotation: %+v %v", j, out, err)
					return
				}
			}
		})
	}
	for range 2 {
		if _, err := v.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	active, live := v.KEKVersions()
	if active != 3 || len(live) != 1 {
		t.Fatalf("after two rotations: active %d, live %v", active, live)
	}
	out, err := v.Detokenize(ctx, TypeGeneric, toks[:1000])
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if o.Value != items[i].Value {
			t.Fatalf("value %d lost: %+v", i, o)
		}
	}
	// A restart unseals only the live version.
	v2, err := Open(ctx, v.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer v2.Close()
	if out, _ := v2.Detokenize(ctx, TypeGeneric, toks[1999:]); out[0].Value != items[1999].Value {
		t.Fatalf("after restart %+v", out)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("pan", "4111111111111112")
	f.Add("email", "tok_eml_abcdefghijklmnopqrstuvwxyz@example.com")
	f.Add("ssn", "tok_ssn_aaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, typ, s string) {
		if ParseToken(typ, s) == nil && typ == TypePAN && luhn([]byte(s)) {
			t.Fatalf("a Luhn-valid number parsed as a card token: %q", s)
		}
	})
}

func FuzzNormalize(f *testing.F) {
	f.Add("pan", "4111 1111 1111 1111")
	f.Add("ssn", "123-45-6789")
	f.Add("email", "a@b.co")
	f.Fuzz(func(t *testing.T, typ, value string) {
		norm, err := Normalize(typ, value)
		if err != nil {
			return
		}
		if again, err := Normalize(typ, norm); err != nil || again != norm {
			t.Fatalf("%s %q → %q → %q %v: not stable", typ, value, norm, again, err)
		}
		tok, err := newToken(typ, norm, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := ParseToken(typ, tok); err != nil {
			t.Fatalf("%s token %q of %q: %v", typ, tok, norm, err)
		}
	})
}
