package shop

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wardsec/ward/pep"
)

const paymentsManifest = `service: payments
version: 1.0.0
provides:
  - resource: charges
    actions: [create, read]
consumes:
  - service: vault
    resource: pan
    actions: [tokenize, detokenize]
`

var paymentsRoutes = []pep.Route{
	{Pattern: "POST /charges", Resource: "charges", Action: "create"},
	{Pattern: "GET /charges/{id}", Resource: "charges", Action: "read"},
}

// ChargeRequest is the body of POST /charges.
type ChargeRequest struct {
	AmountCents int64  `json:"amount_cents"`
	CardNumber  string `json:"card_number"`
}

// Charge is what payments keeps of a charge: the vault's token of the card
// number, never the number.
type Charge struct {
	ID          string    `json:"id"`
	User        string    `json:"user,omitempty"`
	AmountCents int64     `json:"amount_cents"`
	CardToken   string    `json:"card_token"`
	AuthCode    string    `json:"auth_code"`
	Created     time.Time `json:"created"`
}

type payments struct {
	vault   *peerClient
	store   *journal
	mu      sync.Mutex
	charges map[string]Charge
}

func newPayments(e *env) (http.Handler, error) {
	p := &payments{vault: e.clients["vault"], store: &journal{path: filepath.Join(e.cfg.DataDir, "charges.jsonl")}, charges: map[string]Charge{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /charges", p.create)
	mux.HandleFunc("GET /charges/{id}", p.get)
	return mux, nil
}

// create tokenizes the card number in the vault, then reveals it from the
// token only to authorize the amount with the card network: the number
// lives in this process for the length of the request and is written
// nowhere.
func (p *payments) create(w http.ResponseWriter, r *http.Request) {
	var req ChargeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		problem(w, http.StatusBadRequest, "Invalid request", err.Error())
		return
	}
	pan, err := NormalizePAN(req.CardNumber)
	if err != nil {
		problem(w, http.StatusUnprocessableEntity, "Invalid card number", err.Error())
		return
	}
	if req.AmountCents < 1 || req.AmountCents > 1_000_000 {
		problem(w, http.StatusBadRequest, "Invalid amount", "amount_cents must be 1 to 1000000")
		return
	}
	var tok struct {
		Tokens []string `json:"tokens"`
	}
	err = p.vault.call(r.Context(), http.MethodPost, "/v1/tokenize/pan", map[string]any{"values": []map[string]string{{"value": pan, "subject": user(r)}}}, &tok)
	if err != nil {
		peerProblem(w, err)
		return
	}
	if len(tok.Tokens) != 1 {
		problem(w, http.StatusBadGateway, "Dependency refused", "the vault answered without a token")
		return
	}
	// The card network needs the number: reveal it from the token.
	var rev struct {
		Values []struct {
			Value string `json:"value"`
			Error string `json:"error"`
		} `json:"values"`
	}
	if err := p.vault.call(r.Context(), http.MethodPost, "/v1/detokenize/pan", map[string]any{"tokens": tok.Tokens}, &rev); err != nil {
		peerProblem(w, err)
		return
	}
	if len(rev.Values) != 1 || rev.Values[0].Error != "" {
		problem(w, http.StatusBadGateway, "Dependency refused", "the vault did not reveal the card")
		return
	}
	code, err := authorizeWithNetwork(rev.Values[0].Value, req.AmountCents)
	if err != nil {
		problem(w, http.StatusPaymentRequired, "Card declined", err.Error())
		return
	}
	c := Charge{ID: newID("ch"), User: user(r), AmountCents: req.AmountCents, CardToken: tok.Tokens[0], AuthCode: code, Created: time.Now().UTC()}
	if err := p.store.append(c); err != nil {
		problem(w, http.StatusServiceUnavailable, "Charge not stored", "the charge could not be recorded; nothing was captured")
		return
	}
	p.mu.Lock()
	p.charges[c.ID] = c
	p.mu.Unlock()
	reply(w, http.StatusCreated, c)
}

func (p *payments) get(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	c, ok := p.charges[r.PathValue("id")]
	p.mu.Unlock()
	if !ok {
		problem(w, http.StatusNotFound, "Unknown charge", "no such charge")
		return
	}
	reply(w, http.StatusOK, c)
}

// NormalizePAN returns the digits of a card number (spaces and dashes
// removed): 12 to 19 digits with a valid Luhn check digit.
func NormalizePAN(s string) (string, error) {
	if len(s) > 40 {
		return "", errors.New("a card number has 12 to 19 digits")
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r == ' ' || r == '-':
		default:
			return "", errors.New("a card number holds only digits, spaces and dashes")
		}
	}
	pan := b.String()
	if len(pan) < 12 || len(pan) > 19 {
		return "", errors.New("a card number has 12 to 19 digits")
	}
	if !luhn(pan) {
		return "", errors.New("the check digit is wrong")
	}
	return pan, nil
}

func luhn(digits string) bool {
	sum := 0
	for i := range len(digits) {
		d := int(digits[len(digits)-1-i] - '0')
		if i%2 == 1 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

// DeclinedCard is the test card number the simulated card network
// declines.
const DeclinedCard = "4000000000000002"

// authorizeWithNetwork stands in for the card network: it declines
// DeclinedCard and authorizes every other valid number.
func authorizeWithNetwork(pan string, amount int64) (string, error) {
	if _, err := NormalizePAN(pan); err != nil {
		return "", err
	}
	if pan == DeclinedCard {
		return "", fmt.Errorf("the card network declined %d cents", amount)
	}
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("A%06d", n.Int64()), nil
}

// newID returns prefix_ and 16 random base32 characters (80 bits).
func newID(prefix string) string {
	return prefix + "_" + strings.ToLower(rand.Text()[:16])
}
