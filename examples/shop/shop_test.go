package shop

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wardsec/ward/internal/deptest"
)

// TestDependencies: the shop is written only against the public SDK.
func TestDependencies(t *testing.T) { deptest.Check(t) }

func TestNormalizePAN(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"4242 4242 4242 4242", "4242424242424242", true},
		{"4111-1111-1111-1111", "4111111111111111", true},
		{"4111111111111112", "", false}, // check digit
		{"4111 1111 1111", "", false},   // 12 digits, wrong check digit
		{"41111111111", "", false},      // 11 digits
		{"4111111111111111111111", "", false},
		{"4111 1111 1111 111a", "", false},
		{"", "", false},
		{strings.Repeat(" ", 41), "", false},
	} {
		got, err := NormalizePAN(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("NormalizePAN(%q) = %q, %v; want %q ok=%t", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestDecodeJSON(t *testing.T) {
	var req OrderRequest
	for _, bad := range []string{"", "{", `{"sku":1}`, `{"sku":"a","extra":true}`, `{"sku":"a"} {"sku":"b"}`, "[]",
		`{"sku":"` + strings.Repeat("a", maxBody) + `"}`} {
		if err := decodeJSON(strings.NewReader(bad), &req); err == nil {
			t.Errorf("decodeJSON(%.40q) accepted", bad)
		}
	}
	if err := decodeJSON(strings.NewReader(`{"sku":"sku-lamp","quantity":1,"card_number":"4242424242424242"}`), &req); err != nil || req.Quantity != 1 {
		t.Fatalf("decodeJSON: %v %+v", err, req)
	}
}

func do(t *testing.T, h http.Handler, method, path, body string, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var out map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &out)
	if w.Code >= 400 && w.Header().Get("Content-Type") != "application/problem+json" {
		t.Errorf("%s %s: %d without problem+json", method, path, w.Code)
	}
	return w.Code, out
}

// TestShippingTrustsOnlyTheSidecar: shipping refuses requests without the
// sidecar's Ward-Caller, and reports exactly the Ward-* headers it got.
func TestShippingTrustsOnlyTheSidecar(t *testing.T) {
	h := ShippingHandler()
	body := `{"order_id":"ord_1","sku":"sku-lamp","quantity":1}`
	if code, _ := do(t, h, "POST", "/shipments", body, nil); code != http.StatusForbidden {
		t.Fatalf("without Ward-Caller: %d", code)
	}
	code, out := do(t, h, "POST", "/shipments", body, map[string]string{"Ward-Caller": "spiffe://ward.test/svc/orders", "Ward-User": "alice", "Ward-Correlation-Id": "c1"})
	if code != http.StatusCreated || out["caller"] != "spiffe://ward.test/svc/orders" || out["user"] != "alice" || out["correlation_id"] != "c1" {
		t.Fatalf("through the sidecar: %d %v", code, out)
	}
	if hs, _ := out["ward_headers"].([]any); len(hs) != 3 {
		t.Fatalf("ward_headers %v", out["ward_headers"])
	}
	id, _ := out["id"].(string)
	if code, _ := do(t, h, "GET", "/shipments/"+id, "", map[string]string{"Ward-Caller": "x"}); code != http.StatusOK {
		t.Fatalf("GET shipment: %d", code)
	}
	for _, c := range []struct {
		body string
		want int
	}{{`{"order_id":"","quantity":1}`, 400}, {`nope`, 400}, {`{"order_id":"o","quantity":0}`, 400}} {
		if code, _ := do(t, h, "POST", "/shipments", c.body, map[string]string{"Ward-Caller": "x"}); code != c.want {
			t.Errorf("POST %s: %d, want %d", c.body, code, c.want)
		}
	}
	if code, _ := do(t, h, "GET", "/shipments/none", "", map[string]string{"Ward-Caller": "x"}); code != http.StatusNotFound {
		t.Errorf("unknown shipment: %d", code)
	}
}

func TestInventory(t *testing.T) {
	h, err := newInventory(nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, out := do(t, h, "GET", "/stock/sku-desk", "", nil); code != 200 || out["available"] != float64(Stock["sku-desk"]) {
		t.Fatalf("GET: %d %v", code, out)
	}
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/stock/sku-desk/reserve", `{"quantity":3}`, 200},
		{"/stock/sku-desk/reserve", `{"quantity":3}`, 409}, // only 1 left
		{"/stock/sku-desk/reserve", `{"quantity":0}`, 400},
		{"/stock/sku-desk/reserve", `{"quantity":1000}`, 400},
		{"/stock/sku-desk/reserve", `{"qty":1}`, 400},
		{"/stock/sku-none/reserve", `{"quantity":1}`, 404},
		{"/stock/DROP%20TABLE/reserve", `{"quantity":1}`, 400},
	} {
		if code, out := do(t, h, "POST", c.path, c.body, nil); code != c.want {
			t.Errorf("POST %s %s: %d %v, want %d", c.path, c.body, code, out, c.want)
		}
	}
}

// TestOrdersNeedAPassport: an order without a customer passport is
// refused before anything is called.
func TestOrdersNeedAPassport(t *testing.T) {
	h, err := newOrders(&env{cfg: Config{DataDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := do(t, h, "POST", "/orders", `{"sku":"sku-lamp","quantity":1,"card_number":"4242424242424242"}`, nil); code != http.StatusUnauthorized {
		t.Fatalf("order without a passport: %d", code)
	}
	if code, _ := do(t, h, "GET", "/orders/ord_none", "", nil); code != http.StatusNotFound {
		t.Fatalf("unknown order: %d", code)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Service: "billing", SVIDDir: t.TempDir()},
		{Service: Orders},
		{Service: Orders, SVIDDir: t.TempDir(), Peers: map[string]string{Inventory: "https://x", Payments: "http://plain"}},
		{Service: Payments, SVIDDir: t.TempDir()},
	} {
		if err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) accepted", cfg)
		}
	}
}

func TestNetworkDeclines(t *testing.T) {
	if _, err := authorizeWithNetwork(DeclinedCard, 100); err == nil {
		t.Fatal("the declined test card was authorized")
	}
	code, err := authorizeWithNetwork("4242424242424242", 100)
	if err != nil || len(code) != 7 || code[0] != 'A' {
		t.Fatalf("authorization %q %v", code, err)
	}
}

// FuzzRequests: the shop's request bodies (untrusted bytes from the
// network) never panic the decoder or the card-number check, and what is
// accepted as a card number is 12 to 19 digits.
func FuzzRequests(f *testing.F) {
	f.Add([]byte(`{"sku":"sku-lamp","quantity":1,"card_number":"4242 4242 4242 4242"}`))
	f.Add([]byte(`{"amount_cents":100,"card_number":"4111-1111-1111-1111"}`))
	f.Add([]byte(`{"order_id":"o","sku":"s","quantity":-1}`))
	f.Add([]byte(`{"quantity":1e999}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var o OrderRequest
		if decodeJSON(strings.NewReader(string(data)), &o) == nil {
			if pan, err := NormalizePAN(o.CardNumber); err == nil && (len(pan) < 12 || len(pan) > 19 || !luhn(pan)) {
				t.Fatalf("accepted card number %q", pan)
			}
		}
		var c ChargeRequest
		_ = decodeJSON(strings.NewReader(string(data)), &c)
		var s ShipmentRequest
		_ = decodeJSON(strings.NewReader(string(data)), &s)
		var r ReserveRequest
		_ = decodeJSON(strings.NewReader(string(data)), &r)
	})
}
