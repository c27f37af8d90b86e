package kms_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/wardsec/ward/internal/kms"
	"github.com/wardsec/ward/internal/kms/kmstest"
)

func randomKEK(t testing.TB) []byte {
	t.Helper()
	kek := make([]byte, kms.KEKSize)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	return kek
}

func TestLocalContract(t *testing.T) {
	kmstest.Run(t, func(t *testing.T) kms.KMS {
		k, err := kms.NewLocal(randomKEK(t))
		if err != nil {
			t.Fatal(err)
		}
		return k
	})
}

func TestNewLocalKEKSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		ok   bool
	}{
		{"empty", 0, false},
		{"aes-128", 16, false},
		{"aes-192", 24, false},
		{"aes-256", 32, true},
		{"too long", 33, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kms.NewLocal(make([]byte, tc.size))
			if tc.ok && err != nil {
				t.Fatalf("NewLocal: %v", err)
			}
			if !tc.ok && !errors.Is(err, kms.ErrKEKSize) {
				t.Fatalf("NewLocal err = %v, want ErrKEKSize", err)
			}
		})
	}
}

func TestLocalFormat(t *testing.T) {
	ctx := context.Background()
	k, err := kms.NewLocal(randomKEK(t))
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte("hello")
	ct, err := k.Encrypt(ctx, pt, []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if ct[0] != 1 {
		t.Errorf("version byte = %d, want 1", ct[0])
	}
	if want := 1 + 12 + len(pt) + 16; len(ct) != want {
		t.Errorf("len(ciphertext) = %d, want %d", len(ct), want)
	}
	// An unknown version is refused even if the rest is intact.
	bad := bytes.Clone(ct)
	bad[0] = 2
	if _, err := k.Decrypt(ctx, bad, []byte("aad")); !errors.Is(err, kms.ErrDecrypt) {
		t.Errorf("Decrypt(version 2) err = %v, want ErrDecrypt", err)
	}
	// The error carries no secret material.
	if _, err := k.Decrypt(ctx, ct, []byte("other")); err == nil || err.Error() != "kms: decryption failed" {
		t.Errorf("wrong aad error = %v", err)
	}
}

func writeFile(t *testing.T, data []byte, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // defeat the umask
		t.Fatal(err)
	}
	return path
}

func TestLoadKEKFileFormats(t *testing.T) {
	kek := randomKEK(t)
	// A raw key that ends in a newline byte must stay 32 bytes, untrimmed.
	rawNL := bytes.Clone(kek)
	rawNL[31] = '\n'
	for _, tc := range []struct {
		name string
		data []byte
		want []byte
	}{
		{"raw", kek, kek},
		{"raw ending in newline byte", rawNL, rawNL},
		{"hex", []byte(hex.EncodeToString(kek)), kek},
		{"hex newline", []byte(hex.EncodeToString(kek) + "\n"), kek},
		{"hex upper crlf", append(bytes.ToUpper([]byte(hex.EncodeToString(kek))), "\r\n"...), kek},
		{"base64", []byte(base64.StdEncoding.EncodeToString(kek)), kek},
		{"base64 newline", []byte(base64.StdEncoding.EncodeToString(kek) + "\n"), kek},
		{"base64 raw", []byte(base64.RawStdEncoding.EncodeToString(kek) + "\n"), kek},
		{"base64url", []byte(base64.URLEncoding.EncodeToString(kek) + "\r\n"), kek},
		{"base64url raw", []byte(base64.RawURLEncoding.EncodeToString(kek)), kek},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kms.LoadKEKFile(writeFile(t, tc.data, 0o600))
			if err != nil {
				t.Fatalf("LoadKEKFile: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("LoadKEKFile = %x, want %x", got, tc.want)
			}
		})
	}
}

func TestLoadKEKFileRejects(t *testing.T) {
	kek := randomKEK(t)
	hexKEK := []byte(hex.EncodeToString(kek) + "\n")
	for _, tc := range []struct {
		name string
		data []byte
		perm os.FileMode
		want error
	}{
		{"empty", nil, 0o600, kms.ErrKEKFormat},
		{"short raw", kek[:31], 0o600, kms.ErrKEKFormat},
		{"long raw", append(bytes.Clone(kek), 0, 0), 0o600, kms.ErrKEKFormat},
		{"short hex", []byte(hex.EncodeToString(kek[:31])), 0o600, kms.ErrKEKFormat},
		{"bad hex", append([]byte("zz"), hexKEK[2:]...), 0o600, kms.ErrKEKFormat},
		{"base64 of 31 bytes", []byte(base64.StdEncoding.EncodeToString(kek[:31])), 0o600, kms.ErrKEKFormat},
		{"too large", bytes.Repeat([]byte("a"), 5000), 0o600, kms.ErrKEKFormat},
		{"owner read-only ok", hexKEK, 0o400, nil},
		{"group readable", hexKEK, 0o640, kms.ErrKEKPermissions},
		{"world readable", hexKEK, 0o604, kms.ErrKEKPermissions},
		{"group writable", hexKEK, 0o620, kms.ErrKEKPermissions},
		{"world executable", hexKEK, 0o601, kms.ErrKEKPermissions},
		{"0644", hexKEK, 0o644, kms.ErrKEKPermissions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if runtime.GOOS == "windows" && tc.want == kms.ErrKEKPermissions {
				t.Skip("no Unix permissions on Windows")
			}
			got, err := kms.LoadKEKFile(writeFile(t, tc.data, tc.perm))
			if tc.want == nil {
				if err != nil || !bytes.Equal(got, kek) {
					t.Fatalf("LoadKEKFile = %x, %v; want key", got, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("LoadKEKFile err = %v, want %v", err, tc.want)
			}
			if got != nil {
				t.Fatal("LoadKEKFile returned a key with an error")
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		_, err := kms.LoadKEKFile(filepath.Join(t.TempDir(), "nope"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := kms.LoadKEKFile(dir); err == nil {
			t.Fatal("LoadKEKFile(directory) succeeded")
		}
	})
}

func TestGenerateKEKFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	if err := kms.GenerateKEKFile(path); err != nil {
		t.Fatalf("GenerateKEKFile: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %#o, want 0600", fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 65 || data[64] != '\n' {
		t.Errorf("file = %q, want 64 hex chars and a newline", data)
	}
	kek, err := kms.LoadKEKFile(path)
	if err != nil {
		t.Fatalf("LoadKEKFile: %v", err)
	}
	if _, err := kms.NewLocal(kek); err != nil {
		t.Fatalf("NewLocal: %v", err)
	}

	// Never overwrite an existing key.
	if err := kms.GenerateKEKFile(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second GenerateKEKFile err = %v, want fs.ErrExist", err)
	}
	again, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(again, data) {
		t.Fatal("existing key file changed")
	}

	// Two keys differ.
	path2 := filepath.Join(t.TempDir(), "kek")
	if err := kms.GenerateKEKFile(path2); err != nil {
		t.Fatal(err)
	}
	kek2, err := kms.LoadKEKFile(path2)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(kek, kek2) {
		t.Fatal("two generated keys are equal")
	}
}

func TestDeriveKEK(t *testing.T) {
	salt := []byte("0123456789abcdef")
	pass := []byte("correct horse battery")

	k1, err := kms.DeriveKEK(pass, salt)
	if err != nil {
		t.Fatalf("DeriveKEK: %v", err)
	}
	if len(k1) != kms.KEKSize {
		t.Fatalf("len = %d, want 32", len(k1))
	}
	k2, err := kms.DeriveKEK(pass, salt)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1, k2) {
		t.Fatal("DeriveKEK is not deterministic")
	}
	k3, err := kms.DeriveKEK(pass, []byte("fedcba9876543210"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(k1, k3) {
		t.Fatal("different salts give the same key")
	}
	if _, err := kms.NewLocal(k1); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		pass, salt []byte
		want       error
	}{
		{"short passphrase", []byte("elevenchars"), salt, kms.ErrWeakPassphrase},
		{"empty passphrase", nil, salt, kms.ErrWeakPassphrase},
		{"short salt", pass, salt[:15], kms.ErrShortSalt},
		{"no salt", pass, nil, kms.ErrShortSalt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kms.DeriveKEK(tc.pass, tc.salt); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// A pinned answer guards the argon2id parameters (t=3, m=64 MiB, p=2, 32
// bytes; computed with x/crypto/argon2): changing them would make
// every existing passphrase-derived KEK undecryptable.
func TestDeriveKEKKnownAnswer(t *testing.T) {
	got, err := kms.DeriveKEK([]byte("ward test passphrase"), []byte("ward-test-salt-16"))
	if err != nil {
		t.Fatal(err)
	}
	const want = "50496dfab9e102014da3646c3a96add46caabcfb976fcfab494ff8ed53dc8416"
	if hex.EncodeToString(got) != want {
		t.Fatalf("DeriveKEK = %x, want %s", got, want)
	}
}

func BenchmarkLocalEncryptDecrypt(b *testing.B) {
	k, err := kms.NewLocal(randomKEK(b))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	pt := make([]byte, 138) // size of a PKCS#8 P-256 key
	aad := []byte("ca:0123456789abcdef")
	b.ReportAllocs()
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		ct, err := k.Encrypt(ctx, pt, aad)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.Decrypt(ctx, ct, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseKEK(f *testing.F) {
	kek := make([]byte, kms.KEKSize)
	f.Add(kek)
	f.Add([]byte(hex.EncodeToString(kek) + "\n"))
	f.Add([]byte(base64.StdEncoding.EncodeToString(kek)))
	f.Add([]byte(base64.RawURLEncoding.EncodeToString(kek) + "\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := kms.ParseKEK(data)
		if err != nil {
			if !errors.Is(err, kms.ErrKEKFormat) {
				t.Fatalf("error without sentinel: %v", err)
			}
			return
		}
		if len(k) != kms.KEKSize {
			t.Fatalf("ParseKEK returned %d bytes", len(k))
		}
	})
}

func FuzzDecrypt(f *testing.F) {
	k, err := kms.NewLocal(make([]byte, kms.KEKSize))
	if err != nil {
		f.Fatal(err)
	}
	ct, err := k.Encrypt(context.Background(), []byte("seed"), []byte("aad"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ct, []byte("aad"))
	f.Add([]byte{1}, []byte{})
	f.Fuzz(func(t *testing.T, ct, aad []byte) {
		pt, err := k.Decrypt(context.Background(), ct, aad)
		if err != nil {
			if !errors.Is(err, kms.ErrDecrypt) || pt != nil {
				t.Fatalf("Decrypt = %x, %v", pt, err)
			}
			return
		}
		// Only the genuine ciphertext, with its aad, opens.
		if string(pt) != "seed" || string(aad) != "aad" {
			t.Fatalf("forged ciphertext opened: %x", pt)
		}
	})
}

func ExampleNewLocal() {
	kek := make([]byte, kms.KEKSize) // in production: kms.LoadKEKFile(path)
	if _, err := rand.Read(kek); err != nil {
		panic(err)
	}
	k, err := kms.NewLocal(kek)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	sealed, err := k.Encrypt(ctx, []byte("ca private key"), []byte("ca:root-1"))
	if err != nil {
		panic(err)
	}
	if _, err := k.Decrypt(ctx, sealed, []byte("ca:root-2")); errors.Is(err, kms.ErrDecrypt) {
		fmt.Println("wrong aad:", err)
	}
	plain, err := k.Decrypt(ctx, sealed, []byte("ca:root-1"))
	if err != nil {
		panic(err)
	}
	fmt.Println(string(plain))
	// Output:
	// wrong aad: kms: decryption failed
	// ca private key
}
