package redact

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	r, err := New(Config{Fields: []string{"Mother-Maiden-Name"}, Patterns: []string{`EMP-\d{6}`}})
	if err != nil {
		t.Fatal(err)
	}
	apiKey := "ward_0123456789abcdef_" + strings.Repeat("A", 43) + "_deadbeef"
	jwt := "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
	line := `{"v":1,"kind":"x","reason":"card 4111 1111 1111 1111 and order 1234567890123456, mail bob.smith@example.co.uk",` +
		`"extra":{"ssn_text":"id 123-45-6789","note":"Authorization: Bearer ` + jwt + `","k":"` + apiKey + `",` +
		`"password":"hunter2","nested":[{"client_secret":"s3cr3t"},"emp EMP-123456"],"mother_maiden_name":"X","num":4111111111111111,` +
		`"escaped":"alice\u0040example.com"}}`
	out, changed := r.Line([]byte(line))
	s := string(out)
	if !changed {
		t.Fatal("nothing redacted")
	}
	for _, leaked := range []string{"4111", "bob.smith", "123-45-6789", jwt, apiKey, "hunter2", "s3cr3t", "EMP-123456", `"X"`, "alice"} {
		if strings.Contains(s, leaked) {
			t.Errorf("%q survived: %s", leaked, s)
		}
	}
	for _, kept := range []string{"1234567890123456", MarkPAN, MarkEmail, MarkNationalID, MarkToken, MarkField, MarkPattern, `"kind":"x"`} {
		if !strings.Contains(s, kept) {
			t.Errorf("%q missing: %s", kept, s)
		}
	}
	// Text lines too.
	out, _ = r.Line([]byte("plain text with 4111-1111-1111-1111 and " + apiKey))
	if strings.Contains(string(out), "4111") || strings.Contains(string(out), apiKey) {
		t.Errorf("text line: %s", out)
	}
	// Clean lines are returned as they are.
	clean := []byte(`{"v":1,"kind":"authz.decision","caller":"spiffe://ward.test/svc/web"}`)
	if out, changed := r.Line(clean); changed || string(out) != string(clean) {
		t.Errorf("clean line changed: %s", out)
	}
	if _, err := New(Config{Patterns: []string{"("}}); err == nil {
		t.Error("bad pattern accepted")
	}
}

func TestLuhn(t *testing.T) {
	for s, want := range map[string]bool{"4111111111111111": true, "4111111111111112": false, "5500 0000 0000 0004": true, "1234567890123456": false, "0000000000000": true} {
		if luhn(s) != want {
			t.Errorf("luhn(%q) = %v", s, !want)
		}
	}
}

func FuzzRedact(f *testing.F) {
	r, _ := New(Config{})
	f.Add([]byte(`{"a":"4111 1111 1111 1111","password":"x"}`))
	f.Add([]byte("bearer abcdefghijkl"))
	f.Add([]byte(`{"a":[1,{"b":"c@d.io"}]}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		out, _ := r.Line(line)
		// Whatever comes out passes through again unchanged-or-smaller:
		// redaction is idempotent on its own output.
		again, changed := r.Line(out)
		if changed && string(again) != string(out) && len(again) > len(out)+len(MarkPAN) {
			t.Fatalf("not stable: %q → %q → %q", line, out, again)
		}
		// No card-shaped number that passes Luhn survives (a longer
		// digit run such as 0000041111111111111110 is not a card).
		for _, m := range panRE.FindAllString(string(out), -1) {
			if luhn(m) {
				t.Fatalf("card %q survived in %q", m, out)
			}
		}
	})
}
