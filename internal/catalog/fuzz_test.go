package catalog

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func FuzzParseManifest(f *testing.F) {
	for _, seed := range []string{
		webManifest,
		"service: a\nversion: \"1\"\n",
		"service: a\nversion: v1\nauto_approve_l1: true\nprovides: [{resource: r, actions: [b, a, a]}]\n",
		`{"service":"a","version":"1.0.0-rc.1+build_5","provides":[{"resource":"orders","actions":["write","read"]}],"consumes":[]}`,
		"service: shop\nversion: \"3\"\nconsumes:\n  - {service: users, resource: profile, actions: [read]}\n  - {service: pay, resource: charges, actions: [create]}\n",
		"service: &s a\nversion: *s\n",
		"service: a\nversion: v1\n---\nservice: b\n",
		"<<: {service: a}\nversion: v1\n",
		"service: !!binary YQ==\nversion: v1\n",
		"? [a]\n: b\n",
		"",
		"~",
		"[[[[[[[[[[",
		"service: a\nversion: v1\nprovides: [{resource: r, actions: [Read]}]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("error without ErrInvalidManifest: %v", err)
			}
			return
		}
		if len(data) > MaxManifestSize {
			t.Fatalf("accepted %d bytes", len(data))
		}
		c := m.Canonical()
		back, err := DecodeStored(c)
		if err != nil {
			t.Fatalf("DecodeStored(Canonical) of an accepted manifest: %v\n%s", err, c)
		}
		if !reflect.DeepEqual(back, m) {
			t.Fatalf("round trip changed the manifest:\n%#v\n%#v", m, back)
		}
		if !bytes.Equal(back.Canonical(), c) {
			t.Fatalf("Canonical not stable:\n%s\n%s", c, back.Canonical())
		}
		// The canonical JSON is YAML too, and means the same manifest.
		if len(c) > MaxManifestSize {
			return
		}
		again, err := ParseManifest(c)
		if err != nil {
			t.Fatalf("ParseManifest(Canonical): %v\n%s", err, c)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("ParseManifest(Canonical) differs:\n%#v\n%#v", m, again)
		}
	})
}
