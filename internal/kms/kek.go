package kms

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"golang.org/x/crypto/argon2"
)

// Errors returned by the KEK helpers.
var (
	// ErrKEKPermissions reports a KEK file that group or others may access.
	ErrKEKPermissions = errors.New("kms: key encryption key file is accessible by group or others")
	// ErrKEKFormat reports a KEK file that is not 32 raw bytes, 64 hex
	// characters or base64 of 32 bytes.
	ErrKEKFormat = errors.New("kms: key encryption key file must hold 32 raw bytes, 64 hex characters or base64 of 32 bytes")
	// ErrWeakPassphrase reports a passphrase shorter than MinPassphraseLen.
	ErrWeakPassphrase = errors.New("kms: passphrase too short")
	// ErrShortSalt reports a salt shorter than MinSaltLen.
	ErrShortSalt = errors.New("kms: salt too short")
)

// Parameters of DeriveKEK (argon2id).
const (
	MinPassphraseLen = 12
	MinSaltLen       = 16

	argonTime    = 3
	argonMemory  = 64 * 1024 // KiB = 64 MiB
	argonThreads = 2

	maxKEKFileSize = 4096
)

// LoadKEKFile reads a 32-byte key encryption key from path. The file holds
// either exactly 32 raw bytes, 64 hex characters, or the standard or URL-safe
// base64 encoding (padded or not) of 32 bytes; surrounding whitespace such as
// a trailing newline is ignored for the text forms.
//
// On Unix the file must not be accessible by group or others
// (mode & 0o077 == 0); otherwise LoadKEKFile returns an error wrapping
// ErrKEKPermissions and does not read the key.
func LoadKEKFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kms: open key encryption key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat() // stat the opened file, not the path: no swap in between
	if err != nil {
		return nil, fmt.Errorf("kms: stat key encryption key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("kms: key encryption key %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" {
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return nil, fmt.Errorf("%w: %s has mode %#o, run: chmod 600 %s", ErrKEKPermissions, path, perm, path)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKEKFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("kms: read key encryption key: %w", err)
	}
	if len(data) > maxKEKFileSize {
		return nil, fmt.Errorf("%w: %s is too large", ErrKEKFormat, path)
	}
	kek, err := ParseKEK(data)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, path)
	}
	return kek, nil
}

// ParseKEK decodes the contents of a KEK file; see LoadKEKFile for the
// accepted forms.
func ParseKEK(data []byte) ([]byte, error) {
	if len(data) == KEKSize {
		return bytes.Clone(data), nil
	}
	text := bytes.TrimSpace(data)
	if len(text) == 2*KEKSize {
		kek := make([]byte, KEKSize)
		if _, err := hex.Decode(kek, text); err == nil {
			return kek, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if enc.DecodedLen(len(text)) < KEKSize || enc.DecodedLen(len(text)) > KEKSize+2 {
			continue
		}
		kek := make([]byte, enc.DecodedLen(len(text)))
		n, err := enc.Strict().Decode(kek, text)
		if err == nil && n == KEKSize {
			return kek[:n], nil
		}
	}
	return nil, ErrKEKFormat
}

// GenerateKEKFile writes a new random 32-byte key encryption key to path,
// hex-encoded with a trailing newline, with mode 0600. It fails (wrapping
// fs.ErrExist) if path already exists, so a key is never overwritten.
func GenerateKEKFile(path string) (err error) {
	kek := make([]byte, KEKSize)
	if _, err := rand.Read(kek); err != nil {
		return fmt.Errorf("kms: generate key encryption key: %w", err)
	}
	text := make([]byte, hex.EncodedLen(KEKSize)+1)
	hex.Encode(text, kek)
	text[len(text)-1] = '\n'
	clear(kek)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("kms: create key encryption key file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	// The umask can only remove bits, but make the mode explicit anyway.
	if runtime.GOOS != "windows" {
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("kms: chmod key encryption key file: %w", err)
		}
	}
	if _, err := f.Write(text); err != nil {
		return fmt.Errorf("kms: write key encryption key file: %w", err)
	}
	clear(text)
	if err := f.Sync(); err != nil {
		return fmt.Errorf("kms: sync key encryption key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("kms: close key encryption key file: %w", err)
	}
	return nil
}

// DeriveKEK derives a 32-byte key encryption key from a passphrase with
// argon2id (time 3, memory 64 MiB, 2 threads). The salt must be at least 16
// random bytes stored next to the sealed data; the passphrase at least 12
// bytes. It takes a noticeable fraction of a second by design.
func DeriveKEK(passphrase []byte, salt []byte) ([]byte, error) {
	if len(passphrase) < MinPassphraseLen {
		return nil, fmt.Errorf("%w: need at least %d bytes", ErrWeakPassphrase, MinPassphraseLen)
	}
	if len(salt) < MinSaltLen {
		return nil, fmt.Errorf("%w: need at least %d bytes", ErrShortSalt, MinSaltLen)
	}
	return argon2.IDKey(passphrase, salt, argonTime, argonMemory, argonThreads, KEKSize), nil
}
