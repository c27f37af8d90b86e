package pep

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// problem is an RFC 9457 problem document.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// writeProblem answers status with a problem document of type
// https://ward.dev/problems/<slug>.
func writeProblem(w http.ResponseWriter, status int, slug, title, detail string) {
	body, err := json.Marshal(problem{Type: "https://ward.dev/problems/" + slug, Title: title, Status: status, Detail: detail})
	if err != nil { // strings and an int: cannot fail
		body = []byte(`{"status":` + strconv.Itoa(status) + `}`)
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
