package shop

import (
	"errors"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/wardsec/ward/pep"
)

const ordersManifest = `service: orders
version: 1.0.0
provides:
  - resource: orders
    actions: [create, read]
consumes:
  - service: inventory
    resource: stock
    actions: [read, reserve]
  - service: payments
    resource: charges
    actions: [create, read]
  - service: shipping
    resource: shipments
    actions: [create, read]
`

var ordersRoutes = []pep.Route{
	{Pattern: "POST /orders", Resource: "orders", Action: "create"},
	{Pattern: "GET /orders/{id}", Resource: "orders", Action: "read"},
	{Pattern: "GET /orders/deps", Resource: "orders", Action: "read"},
}

// Prices are the shop's prices in cents.
var Prices = map[string]int64{"sku-lamp": 4900, "sku-desk": 25900, "sku-chair": 8900}

// OrderRequest is the body of POST /orders.
type OrderRequest struct {
	SKU        string `json:"sku"`
	Quantity   int    `json:"quantity"`
	CardNumber string `json:"card_number"`
}

// Order is what orders keeps and answers: the card appears only as the
// vault's token, which payments returned.
type Order struct {
	ID          string    `json:"id"`
	User        string    `json:"user"`
	SKU         string    `json:"sku"`
	Quantity    int       `json:"quantity"`
	AmountCents int64     `json:"amount_cents"`
	ChargeID    string    `json:"charge_id"`
	CardToken   string    `json:"card_token"`
	AuthCode    string    `json:"auth_code"`
	Shipment    Shipment  `json:"shipment"`
	Created     time.Time `json:"created"`
}

type orders struct {
	inventory, payments, shipping *peerClient
	store                         *journal
	mu                            sync.Mutex
	orders                        map[string]Order
}

func newOrders(e *env) (http.Handler, error) {
	o := &orders{inventory: e.clients[Inventory], payments: e.clients[Payments], shipping: e.clients[Shipping],
		store: &journal{path: filepath.Join(e.cfg.DataDir, "orders.jsonl")}, orders: map[string]Order{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", o.create)
	mux.HandleFunc("GET /orders/{id}", o.get)
	mux.HandleFunc("GET /orders/deps", o.deps)
	return mux, nil
}

// create takes a customer's order: reserve the stock, charge the card,
// book the parcel. Only a customer with a passport may order.
func (o *orders) create(w http.ResponseWriter, r *http.Request) {
	u := user(r)
	if u == "" {
		problem(w, http.StatusUnauthorized, "Passport required", "orders are placed by a customer through the gateway")
		return
	}
	var req OrderRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		problem(w, http.StatusBadRequest, "Invalid request", err.Error())
		return
	}
	price, ok := Prices[req.SKU]
	if !ok {
		problem(w, http.StatusNotFound, "Unknown item", "the shop does not sell "+clip(req.SKU))
		return
	}
	if req.Quantity < 1 || req.Quantity > 10 {
		problem(w, http.StatusBadRequest, "Invalid quantity", "quantity must be 1 to 10")
		return
	}
	if _, err := NormalizePAN(req.CardNumber); err != nil {
		problem(w, http.StatusUnprocessableEntity, "Invalid card number", err.Error())
		return
	}
	ctx := r.Context()
	if err := o.inventory.call(ctx, http.MethodPost, "/stock/"+req.SKU+"/reserve", ReserveRequest{Quantity: req.Quantity}, nil); err != nil {
		var pe *peerError
		if errors.As(err, &pe) && pe.status == http.StatusConflict {
			problem(w, http.StatusConflict, "Out of stock", pe.detail)
			return
		}
		peerProblem(w, err)
		return
	}
	ord := Order{ID: newID("ord"), User: u, SKU: req.SKU, Quantity: req.Quantity, AmountCents: price * int64(req.Quantity), Created: time.Now().UTC()}
	var ch Charge
	if err := o.payments.call(ctx, http.MethodPost, "/charges", ChargeRequest{AmountCents: ord.AmountCents, CardNumber: req.CardNumber}, &ch); err != nil {
		var pe *peerError
		if errors.As(err, &pe) && pe.status == http.StatusPaymentRequired {
			problem(w, http.StatusPaymentRequired, "Card declined", pe.detail)
			return
		}
		peerProblem(w, err)
		return
	}
	ord.ChargeID, ord.CardToken, ord.AuthCode = ch.ID, ch.CardToken, ch.AuthCode
	if err := o.shipping.call(ctx, http.MethodPost, "/shipments", ShipmentRequest{OrderID: ord.ID, SKU: ord.SKU, Quantity: ord.Quantity}, &ord.Shipment); err != nil {
		peerProblem(w, err)
		return
	}
	if err := o.store.append(ord); err != nil {
		problem(w, http.StatusServiceUnavailable, "Order not stored", "the order could not be recorded")
		return
	}
	o.mu.Lock()
	o.orders[ord.ID] = ord
	o.mu.Unlock()
	reply(w, http.StatusCreated, ord)
}

// get answers one of the caller's orders.
func (o *orders) get(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	ord, ok := o.orders[r.PathValue("id")]
	o.mu.Unlock()
	if !ok || ord.User != user(r) {
		problem(w, http.StatusNotFound, "Unknown order", "no such order")
		return
	}
	reply(w, http.StatusOK, ord)
}

// Deps is the answer of GET /orders/deps: for every service orders calls,
// "ok" when it answered a harmless read, else why not.
type Deps struct {
	Ready bool              `json:"ready"`
	Deps  map[string]string `json:"deps"`
}

// deps reads from each dependency without changing anything: a 404 for
// an unknown ID proves the connection, the identity check and the access
// list all let orders through.
func (o *orders) deps(w http.ResponseWriter, r *http.Request) {
	out := Deps{Ready: true, Deps: map[string]string{}}
	for _, c := range []struct {
		peer *peerClient
		path string
	}{{o.inventory, "/stock/sku-lamp"}, {o.payments, "/charges/ch_probe"}, {o.shipping, "/shipments/shp_probe"}} {
		err := c.peer.call(r.Context(), http.MethodGet, c.path, nil, nil)
		var pe *peerError
		switch {
		case err == nil, errors.As(err, &pe) && pe.status == http.StatusNotFound:
			out.Deps[c.peer.name] = "ok"
		default:
			out.Ready = false
			out.Deps[c.peer.name] = err.Error()
		}
	}
	reply(w, http.StatusOK, out)
}
