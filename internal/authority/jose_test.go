package authority

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// TestAccessListVerifiesWithJWX checks the published format with a JOSE
// library ward does not use itself: the list verifies against /v1/keys,
// and tampered copies do not.
func TestAccessListVerifiesWithJWX(t *testing.T) {
	c := newCatalogEnv(t)
	c.service("id", "whoami", "L1")
	c.service("web", "web", "L1")
	c.declare("whoami", whoamiManifest, http.StatusOK)
	id, _ := requestID(t, c.declare("web", webManifest("1.0.0", "read"), http.StatusOK))
	c.admin("POST", "/v1/catalog/requests/"+id+"/approve", map[string]string{}, http.StatusOK, nil)

	resp, list := c.do(c.clients["whoami"], "GET", "/v1/accesslist", "", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/accesslist: %d %s", resp.StatusCode, list)
	}
	resp, keys := c.do(nil, "GET", "/v1/keys", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("GET /v1/keys: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	set, err := jwk.Parse(keys)
	if err != nil {
		t.Fatalf("jwx cannot parse /v1/keys: %v", err)
	}
	if set.Len() != 1 {
		t.Fatalf("key set has %d keys", set.Len())
	}
	payload, err := jws.Verify(list, jws.WithKeySet(set))
	if err != nil {
		t.Fatalf("jwx does not verify the access list: %v", err)
	}
	if !bytes.Contains(payload, []byte(`"/svc/web"`)) && !bytes.Contains(payload, []byte(`svc/web`)) {
		t.Fatalf("payload lacks the consumer: %s", payload)
	}
	msg, err := jws.Parse(list)
	if err != nil {
		t.Fatal(err)
	}
	if typ, _ := msg.Signatures()[0].ProtectedHeaders().Type(); typ != "ward-accesslist+jws" {
		t.Fatalf("typ %q", typ)
	}

	parts := strings.Split(string(list), ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	forged := strings.Replace(string(payload), "svc/web", "svc/evil", 1)
	tampered := []string{
		parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(forged)) + "." + parts[2],
		parts[0] + "." + parts[1] + "." + flipFirst(parts[2]),
		parts[0] + "." + parts[1] + ".",
		base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"ward-accesslist+jws"}`)) + "." + parts[1] + ".",
	}
	for i, tm := range tampered {
		if _, err := jws.Verify([]byte(tm), jws.WithKeySet(set)); err == nil {
			t.Errorf("tampered copy %d verified", i)
		}
	}
}

func flipFirst(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}
