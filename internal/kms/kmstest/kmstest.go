// Package kmstest is the contract test suite every kms.KMS implementation
// must pass. Call it from the backend's test file:
//
//	func TestLocalContract(t *testing.T) {
//		kmstest.Run(t, func(t *testing.T) kms.KMS { return newLocal(t) })
//	}
package kmstest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/wardsec/ward/internal/kms"
)

// Run exercises the kms.KMS contract. newKMS must return a fresh KMS; two
// calls must return KMSs with different keys (used by the wrong-key case).
func Run(t *testing.T, newKMS func(t *testing.T) kms.KMS) {
	t.Helper()
	ctx := context.Background()

	t.Run("RoundTrip", func(t *testing.T) {
		k := newKMS(t)
		for _, tc := range []struct {
			name      string
			plaintext []byte
			aad       []byte
		}{
			{"empty", nil, nil},
			{"small", []byte("secret"), []byte("ca:1")},
			{"no aad", []byte("secret"), nil},
			{"large", bytes.Repeat([]byte{0xA5}, 1<<16), []byte("signing-key")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ct, err := k.Encrypt(ctx, tc.plaintext, tc.aad)
				if err != nil {
					t.Fatalf("Encrypt: %v", err)
				}
				if len(tc.plaintext) > 0 && bytes.Contains(ct, tc.plaintext) {
					t.Fatal("ciphertext contains the plaintext")
				}
				pt, err := k.Decrypt(ctx, ct, tc.aad)
				if err != nil {
					t.Fatalf("Decrypt: %v", err)
				}
				if !bytes.Equal(pt, tc.plaintext) {
					t.Fatalf("Decrypt = %x, want %x", pt, tc.plaintext)
				}
			})
		}
	})

	t.Run("Randomized", func(t *testing.T) {
		k := newKMS(t)
		a, err := k.Encrypt(ctx, []byte("same"), []byte("aad"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := k.Encrypt(ctx, []byte("same"), []byte("aad"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(a, b) {
			t.Fatal("two encryptions of the same plaintext are equal: nonce reuse")
		}
	})

	t.Run("Rejects", func(t *testing.T) {
		k := newKMS(t)
		other := newKMS(t)
		plaintext, aad := []byte("ca private key"), []byte("ca:1")
		ct, err := k.Encrypt(ctx, plaintext, aad)
		if err != nil {
			t.Fatal(err)
		}
		flip := func(i int) []byte {
			c := bytes.Clone(ct)
			c[i] ^= 0x01
			return c
		}
		for _, tc := range []struct {
			name string
			kms  kms.KMS
			ct   []byte
			aad  []byte
		}{
			{"wrong aad", k, ct, []byte("ca:2")},
			{"missing aad", k, ct, nil},
			{"aad prefix", k, ct, []byte("ca:")},
			{"wrong key", other, ct, aad},
			{"flip first byte", k, flip(0), aad},
			{"flip middle byte", k, flip(len(ct) / 2), aad},
			{"flip last byte", k, flip(len(ct) - 1), aad},
			{"truncated", k, ct[:len(ct)-1], aad},
			{"extended", k, append(bytes.Clone(ct), 0), aad},
			{"empty", k, nil, aad},
			{"one byte", k, ct[:1], aad},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pt, err := tc.kms.Decrypt(ctx, tc.ct, tc.aad)
				if !errors.Is(err, kms.ErrDecrypt) {
					t.Fatalf("Decrypt err = %v, want ErrDecrypt", err)
				}
				if pt != nil {
					t.Fatalf("Decrypt returned plaintext %x with error", pt)
				}
			})
		}
		// Every single-byte change must be detected.
		for i := range ct {
			if _, err := k.Decrypt(ctx, flip(i), aad); !errors.Is(err, kms.ErrDecrypt) {
				t.Fatalf("flipping byte %d: err = %v, want ErrDecrypt", i, err)
			}
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		k := newKMS(t)
		ct, err := k.Encrypt(ctx, []byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := k.Encrypt(cctx, []byte("x"), nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Encrypt with canceled ctx: err = %v, want context.Canceled", err)
		}
		if _, err := k.Decrypt(cctx, ct, nil); !errors.Is(err, context.Canceled) {
			t.Errorf("Decrypt with canceled ctx: err = %v, want context.Canceled", err)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		k := newKMS(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msg := []byte{byte(i), 1, 2, 3}
				ct, err := k.Encrypt(ctx, msg, []byte{byte(i)})
				if err != nil {
					errs <- err
					return
				}
				pt, err := k.Decrypt(ctx, ct, []byte{byte(i)})
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(pt, msg) {
					errs <- errors.New("round trip mismatch")
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
