package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/wardsec/ward/passport"
)

func kidOf(t *testing.T, raw string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(raw, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	_ = json.Unmarshal(h, &hdr)
	return hdr.Kid
}

// Passport keys rotate with overlap: after a rotation new passports carry
// the new kid, and a passport signed just before still verifies.
func TestPassportKeyRotation(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.KeyRotateEvery, c.KeyLifetime, c.PassportTTL, c.KeyPropagation = 1500*time.Millisecond, time.Minute, 10*time.Second, 100*time.Millisecond
	})
	e.setRoute("orders", ordersRoute(map[string]any{"upstream": e.upstream}))
	key, _ := e.apiKey("alice")
	passportOf := func() string {
		_, body := e.get("/orders/1", bearer(key))
		ans := decodeEcho(t, body)
		if ans.Passport == nil || ans.Error != "" {
			t.Fatalf("upstream passport: %q", ans.Error)
		}
		return ans.Headers["Ward-Passport"][0]
	}
	first := passportOf()
	var second string
	deadline := time.Now().Add(10 * time.Second)
	for {
		second = passportOf()
		if kidOf(t, second) != kidOf(t, first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no key rotation within 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The old key is still published: its passport still verifies, at a
	// verifier that never saw it (fetch on the unknown kid).
	fresh, err := passport.NewForSource(e.upSrc, passport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, err := fresh.Verify(context.Background(), first); err != nil {
		t.Fatalf("a passport of the previous key: %v", err)
	}
	resp, err := e.client.Get(e.url + "/v1/passport/keys")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), kidOf(t, first)) || !strings.Contains(string(body), kidOf(t, second)) {
		t.Fatalf("published keys: %s", body)
	}
}
