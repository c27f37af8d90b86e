package shop

import (
	"net/http"
	"sort"
	"strings"
	"sync"
)

// ShippingManifest is what shipping's sidecar declares: it provides
// shipments, and consumes inventory's stock (a request a reviewer has to
// approve; `ward demo` shows it denied, then approved).
const ShippingManifest = `service: shipping
version: 1.0.0
provides:
  - resource: shipments
    actions: [create, read]
consumes:
  - service: inventory
    resource: stock
    actions: [read]
`

// ShippingRoutes is shipping's route table for the sidecar, as YAML for
// `ward sidecar run --routes`.
const ShippingRoutes = `- {pattern: "POST /shipments", resource: shipments, action: create}
- {pattern: "GET /shipments/{id}", resource: shipments, action: read}
`

// ShipmentRequest is the body of POST /shipments.
type ShipmentRequest struct {
	OrderID  string `json:"order_id"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// Shipment is shipping's answer. Caller, User and CorrelationID are what
// the sidecar told shipping; WardHeaders names every Ward-* header the
// request carried, so a test can see that nothing else got through.
type Shipment struct {
	ID            string   `json:"id"`
	OrderID       string   `json:"order_id"`
	Carrier       string   `json:"carrier"`
	Caller        string   `json:"caller"`
	User          string   `json:"user,omitempty"`
	CorrelationID string   `json:"correlation_id,omitempty"`
	WardHeaders   []string `json:"ward_headers"`
}

// ShippingHandler is the shipping service: plain HTTP, no ward SDK. It
// trusts Ward-Caller, Ward-User and Ward-Correlation-Id because it listens
// on loopback behind ward's sidecar, which removes every inbound copy of
// them and sets its own; it refuses requests that did not come through
// the sidecar (no Ward-Caller).
func ShippingHandler() http.Handler {
	s := &shipping{shipments: map[string]Shipment{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /shipments", s.create)
	mux.HandleFunc("GET /shipments/{id}", s.get)
	return mux
}

type shipping struct {
	mu        sync.Mutex
	shipments map[string]Shipment
}

func (s *shipping) create(w http.ResponseWriter, r *http.Request) {
	caller := r.Header.Get("Ward-Caller")
	if caller == "" {
		problem(w, http.StatusForbidden, "Not through the sidecar", "shipping serves only requests its sidecar forwarded")
		return
	}
	var req ShipmentRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		problem(w, http.StatusBadRequest, "Invalid request", err.Error())
		return
	}
	if req.OrderID == "" || req.Quantity < 1 {
		problem(w, http.StatusBadRequest, "Invalid request", "order_id and a positive quantity are required")
		return
	}
	var names []string
	for k := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "ward-") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	sh := Shipment{ID: newID("shp"), OrderID: clip(req.OrderID), Carrier: "demo-post", Caller: caller, User: r.Header.Get("Ward-User"),
		CorrelationID: r.Header.Get("Ward-Correlation-Id"), WardHeaders: names}
	s.mu.Lock()
	if len(s.shipments) < 100_000 {
		s.shipments[sh.ID] = sh
	}
	s.mu.Unlock()
	reply(w, http.StatusCreated, sh)
}

func (s *shipping) get(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Ward-Caller") == "" {
		problem(w, http.StatusForbidden, "Not through the sidecar", "shipping serves only requests its sidecar forwarded")
		return
	}
	s.mu.Lock()
	sh, ok := s.shipments[r.PathValue("id")]
	s.mu.Unlock()
	if !ok {
		problem(w, http.StatusNotFound, "Unknown shipment", "no such shipment")
		return
	}
	reply(w, http.StatusOK, sh)
}
