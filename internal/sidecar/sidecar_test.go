package sidecar

import (
	"fmt"
	"testing"
	"time"
)

func TestPassportCache(t *testing.T) {
	var c passportCache
	c.put("cid-1", "raw-1", time.Now().Add(time.Minute))
	c.put("cid-2", "raw-2", time.Now().Add(-time.Second))
	if raw, ok := c.get("cid-1"); !ok || raw != "raw-1" {
		t.Fatalf("cid-1: %q %v", raw, ok)
	}
	if _, ok := c.get("cid-2"); ok {
		t.Fatal("an expired passport was returned")
	}
	if _, ok := c.get(""); ok {
		t.Fatal("an empty correlation ID matched")
	}
	for i := range maxPassports + 10 {
		c.put(fmt.Sprint(i), "r", time.Now().Add(time.Minute))
	}
	if len(c.m) > maxPassports {
		t.Fatalf("the cache holds %d passports", len(c.m))
	}
}

func TestLoopback(t *testing.T) {
	for host, want := range map[string]bool{"127.0.0.1": true, "::1": true, "127.9.9.9": true, "10.0.0.1": false, "localhost": false, "": false} {
		if loopback(host) != want {
			t.Errorf("loopback(%q) = %v", host, !want)
		}
	}
}
