package shop

import (
	"net/http"
	"regexp"
	"sync"

	"github.com/wardsec/ward/pep"
)

const inventoryManifest = `service: inventory
version: 1.0.0
provides:
  - resource: stock
    actions: [read, reserve]
`

var inventoryRoutes = []pep.Route{
	{Pattern: "GET /stock/{sku}", Resource: "stock", Action: "read", IDParam: "sku"},
	{Pattern: "POST /stock/{sku}/reserve", Resource: "stock", Action: "reserve", IDParam: "sku"},
}

// Stock is what inventory holds at start.
var Stock = map[string]int{"sku-lamp": 25, "sku-desk": 4, "sku-chair": 12}

var skuPattern = regexp.MustCompile(`^sku-[a-z0-9-]{1,40}$`)

type inventory struct {
	mu    sync.Mutex
	stock map[string]int
}

// StockAnswer is inventory's answer for an item.
type StockAnswer struct {
	SKU       string `json:"sku"`
	Available int    `json:"available"`
	Reserved  int    `json:"reserved,omitempty"`
}

// ReserveRequest is the body of POST /stock/{sku}/reserve.
type ReserveRequest struct {
	Quantity int `json:"quantity"`
}

func newInventory(*env) (http.Handler, error) {
	inv := &inventory{stock: map[string]int{}}
	for k, v := range Stock {
		inv.stock[k] = v
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stock/{sku}", inv.get)
	mux.HandleFunc("POST /stock/{sku}/reserve", inv.reserve)
	return mux, nil
}

func (inv *inventory) item(w http.ResponseWriter, r *http.Request) (string, bool) {
	sku := r.PathValue("sku")
	if !skuPattern.MatchString(sku) {
		problem(w, http.StatusBadRequest, "Invalid SKU", "a SKU is sku- followed by lower-case letters, digits and -")
		return "", false
	}
	inv.mu.Lock()
	_, ok := inv.stock[sku]
	inv.mu.Unlock()
	if !ok {
		problem(w, http.StatusNotFound, "Unknown item", "no item "+sku)
		return "", false
	}
	return sku, true
}

func (inv *inventory) get(w http.ResponseWriter, r *http.Request) {
	sku, ok := inv.item(w, r)
	if !ok {
		return
	}
	inv.mu.Lock()
	n := inv.stock[sku]
	inv.mu.Unlock()
	reply(w, http.StatusOK, StockAnswer{SKU: sku, Available: n})
}

func (inv *inventory) reserve(w http.ResponseWriter, r *http.Request) {
	sku, ok := inv.item(w, r)
	if !ok {
		return
	}
	var req ReserveRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		problem(w, http.StatusBadRequest, "Invalid request", err.Error())
		return
	}
	if req.Quantity < 1 || req.Quantity > 100 {
		problem(w, http.StatusBadRequest, "Invalid quantity", "quantity must be 1 to 100")
		return
	}
	inv.mu.Lock()
	n := inv.stock[sku]
	if n < req.Quantity {
		inv.mu.Unlock()
		problem(w, http.StatusConflict, "Out of stock", "not enough "+sku)
		return
	}
	inv.stock[sku] = n - req.Quantity
	inv.mu.Unlock()
	reply(w, http.StatusOK, StockAnswer{SKU: sku, Available: n - req.Quantity, Reserved: req.Quantity})
}
