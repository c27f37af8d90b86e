package sts

import (
	"net/url"
	"testing"
	"time"
)

func exchangeForm(subject string, extra url.Values) url.Values {
	form := url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {subject}, "subject_token_type": {tokenTypeAccess}}
	for k, v := range extra {
		form[k] = v
	}
	return form
}

// TestTokenExchangeChain: the gateway acts for a user-ish subject, then
// orders acts on the gateway's token: the second token nests the chain.
func TestTokenExchangeChain(t *testing.T) {
	f := newFixture(t)
	user, userSecret := f.newClient(ClientSpec{Name: "user-app", Scopes: []string{"orders:read", "orders:write"}})
	gw, gwSecret := f.newClient(ClientSpec{Name: "gateway", GrantTypes: []string{GrantTokenExchange}, Audiences: []string{"orders"}})
	orders, ordersSecret := f.newClient(ClientSpec{Name: "orders", GrantTypes: []string{GrantTokenExchange}, Audiences: []string{"inventory"}})

	subject := f.token(user.ID, userSecret, nil)
	status, out, _ := f.post(nil, "/oauth2/token", exchangeForm(subject, url.Values{"audience": {"orders"}, "scope": {"orders:read"}}), gw.ID, gwSecret)
	if status != 200 || out["issued_token_type"] != tokenTypeAccess {
		t.Fatalf("first exchange: %d %v", status, out)
	}
	first := out["access_token"].(string)
	status, out, _ = f.post(nil, "/oauth2/token", exchangeForm(first, url.Values{"audience": {"inventory"}}), orders.ID, ordersSecret)
	if status != 200 {
		t.Fatalf("second exchange: %d %v", status, out)
	}
	second := out["access_token"].(string)

	_, in, _ := f.post(nil, "/oauth2/introspect", url.Values{"token": {second}}, orders.ID, ordersSecret)
	act, _ := in["act"].(map[string]any)
	inner, _ := act["act"].(map[string]any)
	if in["active"] != true || in["sub"] != "client:user-app" || in["scope"] != "orders:read" || in["aud"] != "inventory" ||
		act["sub"] != "client:orders" || inner["sub"] != "client:gateway" || inner["act"] != nil {
		t.Fatalf("delegated token introspection: %v", in)
	}
	// The chain is in the JWT claims too.
	c, err := f.s.parseToken(second)
	if err != nil || c.Act.depth() != 2 || c.Act.Sub != "client:orders" || c.Act.Act.Sub != "client:gateway" {
		t.Fatalf("claims act: %+v %v", c, err)
	}
}

func TestTokenExchangeRefusals(t *testing.T) {
	f := newFixture(t)
	user, userSecret := f.newClient(ClientSpec{Name: "user-app", Scopes: []string{"orders:read", "orders:write"}, TokenTTL: 2 * time.Minute})
	gw, gwSecret := f.newClient(ClientSpec{Name: "gateway", GrantTypes: []string{GrantTokenExchange}, Audiences: []string{"orders"}})
	plain, plainSecret := f.newClient(ClientSpec{Name: "plain"})
	subject := f.token(user.ID, userSecret, url.Values{"scope": {"orders:read"}})

	tests := []struct {
		name   string
		form   url.Values
		id     string
		secret string
		code   string
	}{
		{"client without the grant", exchangeForm(subject, nil), plain.ID, plainSecret, "unauthorized_client"},
		{"widened scope", exchangeForm(subject, url.Values{"scope": {"orders:write"}}), gw.ID, gwSecret, "invalid_scope"},
		{"audience not allowed", exchangeForm(subject, url.Values{"audience": {"payments"}}), gw.ID, gwSecret, "invalid_target"},
		{"bad subject token", exchangeForm("a.b.c", nil), gw.ID, gwSecret, "invalid_grant"},
		{"missing subject type", url.Values{"grant_type": {GrantTokenExchange}, "subject_token": {subject}}, gw.ID, gwSecret, "invalid_request"},
		{"actor token of another client", exchangeForm(subject, url.Values{"actor_token": {subject}, "actor_token_type": {tokenTypeAccess}}), gw.ID, gwSecret, "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out, _ := f.post(nil, "/oauth2/token", tt.form, tt.id, tt.secret)
			if status != 400 || out["error"] != tt.code {
				t.Fatalf("%d %v, want 400 %s", status, out, tt.code)
			}
		})
	}

	// may_act: only the named party may act for the subject.
	now := f.clock.now()
	mayAct, err := f.s.mint(AlgEdDSA, Claims{Issuer: testIssuer, Subject: "user:alice", Audience: []string{"ward"}, Expiry: now.Add(time.Hour).Unix(),
		IssuedAt: now.Unix(), NotBefore: now.Unix(), ID: "00000000000000000000000000000001", Scope: "orders:read", ClientID: user.ID,
		MayAct: &Actor{Sub: "client:someone-else"}})
	if err != nil {
		t.Fatal(err)
	}
	if status, out, _ := f.post(nil, "/oauth2/token", exchangeForm(mayAct, nil), gw.ID, gwSecret); status != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("may_act ignored: %d %v", status, out)
	}

	// The exchanged token never outlives the subject token.
	status, out, _ := f.post(nil, "/oauth2/token", exchangeForm(subject, nil), gw.ID, gwSecret)
	if status != 200 || out["expires_in"].(float64) > 120 {
		t.Fatalf("exchange outlives its subject: %d %v", status, out)
	}
}
