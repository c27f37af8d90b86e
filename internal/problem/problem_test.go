package problem

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name                       string
		status                     int
		slug, title, detail        string
		wantType, wantTitle, wantS string
	}{
		{name: "ward type", status: 400, slug: "bad-csr", title: "Bad CSR", detail: "x", wantType: TypeBase + "bad-csr", wantTitle: "Bad CSR", wantS: "bad-csr"},
		{name: "default title", status: 401, slug: "unauthorized", wantType: TypeBase + "unauthorized", wantTitle: "Unauthorized", wantS: "unauthorized"},
		{name: "blank", status: 404, wantType: TypeBlank, wantTitle: "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(tt.status, tt.slug, tt.title, tt.detail)
			if p.Type != tt.wantType || p.Title != tt.wantTitle || p.Status != tt.status || p.Detail != tt.detail {
				t.Fatalf("New = %+v", p)
			}
			if got := p.Slug(); got != tt.wantS {
				t.Fatalf("Slug = %q, want %q", got, tt.wantS)
			}
		})
	}
}

func TestFromStatus(t *testing.T) {
	p := FromStatus(http.StatusMethodNotAllowed, "use POST")
	want := Problem{Type: TypeBlank, Title: "Method Not Allowed", Status: 405, Detail: "use POST"}
	if *p != want {
		t.Fatalf("FromStatus = %+v, want %+v", *p, want)
	}
}

func TestError(t *testing.T) {
	tests := []struct {
		name string
		p    *Problem
		want string
	}{
		{name: "full", p: New(403, "forbidden-identity", "Forbidden identity", "csr names another service"), want: "problem: 403 Forbidden identity: csr names another service"},
		{name: "no detail", p: FromStatus(404, ""), want: "problem: 404 Not Found"},
		{name: "nil", p: nil, want: "problem: <nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Error(); got != tt.want {
				t.Fatalf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name       string
		p          *Problem
		wantStatus int
		wantType   string
	}{
		{name: "ward problem", p: New(400, "bad-csr", "Bad CSR", "not a CSR"), wantStatus: 400, wantType: TypeBase + "bad-csr"},
		{name: "nil", p: nil, wantStatus: 500, wantType: TypeBlank},
		{name: "non-error status", p: New(200, "odd", "Odd", ""), wantStatus: 500, wantType: TypeBase + "odd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before int
			if tt.p != nil {
				before = tt.p.Status
			}
			rec := httptest.NewRecorder()
			Write(rec, tt.p)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if ct := rec.Header().Get("Content-Type"); ct != ContentType {
				t.Fatalf("Content-Type = %q", ct)
			}
			if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Fatal("missing nosniff")
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", rec.Body, err)
			}
			if got["type"] != tt.wantType || got["status"] != float64(tt.wantStatus) {
				t.Fatalf("body = %v", got)
			}
			if tt.p != nil && tt.p.Status != before {
				t.Fatalf("Write modified the caller's problem: status %d, was %d", tt.p.Status, before)
			}
		})
	}
}

// TestRoundTrip writes a problem with a real HTTP server and decodes it with
// a real client.
func TestRoundTrip(t *testing.T) {
	want := New(http.StatusForbidden, "forbidden-identity", "Forbidden identity", "csr names spiffe://ward.test/svc/other")
	want.Instance = "/v1/svid"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Write(w, want)
	}))
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	err = Decode(resp)
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("Decode = %T %v, want *Problem", err, err)
	}
	if *p != *want {
		t.Fatalf("Decode = %+v, want %+v", *p, *want)
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ct     string
		body   string
		want   Problem
	}{
		{
			name: "problem", status: 401, ct: "application/problem+json",
			body: `{"type":"https://ward.dev/problems/unauthorized","title":"Unauthorized","status":401,"detail":"token revoked"}`,
			want: Problem{Type: TypeBase + "unauthorized", Title: "Unauthorized", Status: 401, Detail: "token revoked"},
		},
		{
			name: "media type parameters", status: 400, ct: "application/problem+json; charset=utf-8",
			body: `{"type":"https://ward.dev/problems/bad-csr","title":"Bad CSR"}`,
			want: Problem{Type: TypeBase + "bad-csr", Title: "Bad CSR", Status: 400},
		},
		{
			name: "status from response wins", status: 502, ct: ContentType,
			body: `{"type":"https://ward.dev/problems/x","title":"X","status":401}`,
			want: Problem{Type: TypeBase + "x", Title: "X", Status: 502},
		},
		{
			name: "missing type is about:blank", status: 409, ct: ContentType,
			body: `{"title":"Conflict"}`,
			want: Problem{Type: TypeBlank, Title: "Conflict", Status: 409},
		},
		{
			name: "wrongly typed members are ignored", status: 400, ct: ContentType,
			body: `{"type":7,"title":["a"],"status":"400","detail":"ok","extra":{"a":1}}`,
			want: Problem{Type: TypeBlank, Status: 400, Detail: "ok"},
		},
		{
			name: "control characters stripped", status: 400, ct: ContentType,
			body: `{"type":"https://ward.dev/problems/x","title":"A\u001b[31mB","detail":"line1\nline2\u202e"}`,
			want: Problem{Type: TypeBase + "x", Title: "A[31mB", Status: 400, Detail: "line1 line2"},
		},
		{
			name: "plain text body", status: 502, ct: "text/plain",
			body: "upstream connect error\n",
			want: Problem{Type: TypeBlank, Title: "Bad Gateway", Status: 502, Detail: "upstream connect error"},
		},
		{
			name: "json but not problem type", status: 500, ct: "application/json",
			body: `{"title":"x"}`,
			want: Problem{Type: TypeBlank, Title: "Internal Server Error", Status: 500, Detail: `{"title":"x"}`},
		},
		{
			name: "malformed problem", status: 400, ct: ContentType,
			body: `{"type":`,
			want: Problem{Type: TypeBlank, Title: "Bad Request", Status: 400, Detail: `{"type":`},
		},
		{
			name: "empty body unknown status", status: 599, ct: "",
			want: Problem{Type: TypeBlank, Title: "HTTP 599", Status: 599},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{
				StatusCode: tt.status,
				Header:     http.Header{"Content-Type": []string{tt.ct}},
				Body:       io.NopCloser(strings.NewReader(tt.body)),
			}
			var p *Problem
			if err := Decode(resp); !errors.As(err, &p) {
				t.Fatalf("Decode = %T %v", err, err)
			}
			if *p != tt.want {
				t.Fatalf("Decode =\n %+v\nwant\n %+v", *p, tt.want)
			}
		})
	}
}

func TestDecodeBounded(t *testing.T) {
	// A huge problem body is not parsed: Decode reads at most MaxBodySize+1.
	big := `{"type":"https://ward.dev/problems/x","detail":"` + strings.Repeat("a", 2*MaxBodySize) + `"}`
	r := &countingReader{r: strings.NewReader(big)}
	resp := &http.Response{StatusCode: 400, Header: http.Header{"Content-Type": []string{ContentType}}, Body: io.NopCloser(r)}
	var p *Problem
	if err := Decode(resp); !errors.As(err, &p) {
		t.Fatalf("Decode = %v", err)
	}
	if r.n > MaxBodySize+1 {
		t.Fatalf("read %d bytes, limit %d", r.n, MaxBodySize+1)
	}
	if p.Type != TypeBlank || p.Status != 400 || len(p.Detail) > maxSnippet+len("…") {
		t.Fatalf("Decode = %+v", p)
	}
}

func TestDecodeNil(t *testing.T) {
	if err := Decode(nil); !errors.Is(err, ErrNoResponse) {
		t.Fatalf("Decode(nil) = %v", err)
	}
	if err := Decode(&http.Response{StatusCode: 503}); err == nil {
		t.Fatal("Decode with nil body returned nil")
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"type":"https://ward.dev/problems/bad-csr","title":"Bad CSR","status":400,"detail":"x"}`), true)
	f.Add([]byte(`{"type":null,"title":{"a":[1,2]},"status":1e999}`), true)
	f.Add([]byte("\xff\xfe{\"title\":\"\u202e\"}"), true)
	f.Add([]byte("<html>bad gateway</html>"), false)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, body []byte, problemType bool) {
		ct := "text/html"
		if problemType {
			ct = ContentType
		}
		resp := &http.Response{
			StatusCode: 418,
			Header:     http.Header{"Content-Type": []string{ct}},
			Body:       io.NopCloser(strings.NewReader(string(body))),
		}
		err := Decode(resp)
		var p *Problem
		if !errors.As(err, &p) {
			t.Fatalf("Decode = %T %v", err, err)
		}
		if p.Status != 418 || p.Type == "" {
			t.Fatalf("Decode = %+v", p)
		}
		for _, s := range []string{p.Type, p.Title, p.Detail, p.Instance} {
			if len(s) > maxDetailLen+len("…") {
				t.Fatalf("string of %d bytes", len(s))
			}
			for _, r := range s {
				if unicode.IsControl(r) {
					t.Fatalf("control character %U in %q", r, s)
				}
			}
		}
		_ = p.Error()
	})
}
