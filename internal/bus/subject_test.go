package bus

import (
	"errors"
	"strings"
	"testing"
)

func TestSubject(t *testing.T) {
	tests := []struct {
		name  string
		parts []string
		want  string
	}{
		{name: "events", parts: []string{"events"}, want: SubjectEvents},
		{name: "several", parts: []string{"revoked", "svc-web", "0a1b"}, want: "ward.v1.revoked.svc-web.0a1b"},
		{name: "none", parts: nil, want: ""},
		{name: "empty part", parts: []string{"a", ""}, want: ""},
		{name: "dot", parts: []string{"svc.web"}, want: ""},
		{name: "space", parts: []string{"svc web"}, want: ""},
		{name: "tab", parts: []string{"svc\tweb"}, want: ""},
		{name: "star", parts: []string{"*"}, want: ""},
		{name: "gt", parts: []string{">"}, want: ""},
		{name: "non-ascii", parts: []string{"café"}, want: ""},
		{name: "too long", parts: []string{strings.Repeat("a", MaxSubjectLen)}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Subject(tt.parts...)
			if got != tt.want {
				t.Fatalf("Subject(%q) = %q, want %q", tt.parts, got, tt.want)
			}
			if got != "" {
				if err := ValidateSubject(got); err != nil {
					t.Fatalf("ValidateSubject(Subject(...)) = %v", err)
				}
			}
		})
	}
}

func TestValidateSubjectAndFilter(t *testing.T) {
	tests := []struct {
		name        string
		subject     string
		publishOK   bool
		subscribeOK bool
	}{
		{name: "events", subject: SubjectEvents, publishOK: true, subscribeOK: true},
		{name: "deep", subject: "ward.v1.a.b.c", publishOK: true, subscribeOK: true},
		{name: "full wildcard", subject: "ward.v1.>", subscribeOK: true},
		{name: "token wildcard", subject: "ward.v1.*.x", subscribeOK: true},
		{name: "gt not last", subject: "ward.v1.>.x"},
		{name: "prefix only", subject: "ward.v1."},
		{name: "no prefix", subject: "events"},
		{name: "other version", subject: "ward.v2.events"},
		{name: "all", subject: ">"},
		{name: "ward wildcard", subject: "ward.>"},
		{name: "empty token", subject: "ward.v1.a..b"},
		{name: "trailing dot", subject: "ward.v1.a."},
		{name: "space", subject: "ward.v1.a b"},
		{name: "newline", subject: "ward.v1.a\r\nPUB x 1"},
		{name: "partial wildcard", subject: "ward.v1.a*"},
		{name: "empty", subject: ""},
		{name: "too long", subject: SubjectPrefix + strings.Repeat("a", MaxSubjectLen)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateSubject(tt.subject); (err == nil) != tt.publishOK {
				t.Errorf("ValidateSubject(%q) = %v, want ok=%v", tt.subject, err, tt.publishOK)
			} else if err != nil && !errors.Is(err, ErrInvalidSubject) {
				t.Errorf("ValidateSubject error %v does not wrap ErrInvalidSubject", err)
			}
			if err := ValidateFilter(tt.subject); (err == nil) != tt.subscribeOK {
				t.Errorf("ValidateFilter(%q) = %v, want ok=%v", tt.subject, err, tt.subscribeOK)
			}
		})
	}
}

func FuzzValidateSubject(f *testing.F) {
	f.Add("ward.v1.events")
	f.Add("ward.v1.>")
	f.Add("ward.v1.a\x00b")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateSubject(s) == nil {
			if ValidateFilter(s) != nil {
				t.Fatalf("%q publishable but not subscribable", s)
			}
			if strings.ContainsAny(s, " \t\r\n*>") || !strings.HasPrefix(s, SubjectPrefix) {
				t.Fatalf("%q accepted", s)
			}
		}
	})
}

func TestBackoff(t *testing.T) {
	for n := range 20 {
		base := min(MinReconnectDelay<<min(n, 6), MaxReconnectDelay)
		for range 50 {
			d := backoff(n)
			if d < base*4/5 || d > base*6/5 {
				t.Fatalf("backoff(%d) = %v, want %v ±20%%", n, d, base)
			}
		}
	}
	if backoff(100) > MaxReconnectDelay*6/5 {
		t.Fatal("backoff not capped")
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:s3cret@host:4222", "nats://user:xxxxx@host:4222"},
		{"nats://t0ken@host:4222, tls://a:b@h2:1", "nats://xxxxx@host:4222,tls://a:xxxxx@h2:1"},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
