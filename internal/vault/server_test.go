package vault

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/store/storetest"
)

func TestHandlerBadInput(t *testing.T) {
	v, _ := newVault(t, nil)
	h := v.Handler(nil, nil)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		slug                     string
	}{
		{"not JSON", "POST", "/v1/tokenize/pan", "{", 400, "invalid-request"},
		{"unknown field", "POST", "/v1/tokenize/pan", `{"values":[],"x":1}`, 400, "invalid-request"},
		{"not a card", "POST", "/v1/tokenize/pan", `{"values":[{"value":"4111111111111112"}]}`, 400, "invalid-request"},
		{"empty batch", "POST", "/v1/tokenize/ssn", `{"values":[]}`, 400, "batch-too-large"},
		{"bad ttl", "POST", "/v1/tokenize/generic", `{"values":[{"value":"x"}],"ttl":"soon"}`, 400, "invalid-request"},
		{"oversized body", "POST", "/v1/tokenize/generic", `{"values":[{"value":"` + strings.Repeat("x", maxBody) + `"}]}`, 413, "payload-too-large"},
		{"a card as a token", "POST", "/v1/detokenize/pan", `{"tokens":["4111111111111111"]}`, 400, "invalid-request"},
		{"unknown token metadata", "GET", "/v1/tokens/ssn/tok_ssn_aaaaaaaaaaaaaaaaaaaaaaaaaa/metadata", "", 404, "not-found"},
		{"malformed token", "DELETE", "/v1/tokens/email/nope", "", 400, "invalid-request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			var p struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(w.Body.Bytes(), &p)
			if w.Code != tc.status || p.Type != "https://ward.dev/problems/"+tc.slug || w.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %s", w.Code, w.Body)
			}
		})
	}
	// A detokenize answer never carries a value for an unknown token.
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("POST", "/v1/detokenize/generic", strings.NewReader(`{"tokens":["tok_gen_aaaaaaaaaaaaaaaaaaaaaaaaaa"]}`)))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"error":"not-found"`) {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

// TestPostgres runs the vault on PostgreSQL: tokenize, deterministic
// tokens, detokenize, erase, rotate.
func TestPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	ctx := context.Background()
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	k, _ := kms.NewLocal(kek)
	v, err := Open(ctx, Config{DB: dsn, KMS: k, Deterministic: []string{TypeSSN}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	toks, err := v.Tokenize(ctx, TypeSSN, []Item{{Value: "123-45-6789", Subject: "a"}, {Value: "123456789", Subject: "a"}, {Value: "234-56-7890", Subject: "b"}}, 0)
	if err != nil || toks[0] != toks[1] || toks[2] == toks[0] {
		t.Fatalf("tokens %v %v", toks, err)
	}
	if _, err := v.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := v.Erase(ctx, TypeSSN, "a"); err != nil || n != 1 {
		t.Fatalf("erase %d %v", n, err)
	}
	out, err := v.Detokenize(ctx, TypeSSN, []string{toks[0], toks[2]})
	if err != nil || out[0].Error != "not-found" || out[1].Value != "234-56-7890" {
		t.Fatalf("after erase and rotation %+v %v", out, err)
	}
}
