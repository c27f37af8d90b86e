package collector

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Checkpoints are C2SP tlog-checkpoint notes (https://c2sp.org/tlog-checkpoint)
// signed in the C2SP signed-note format (https://c2sp.org/signed-note) with
// an Ed25519 key:
//
//	<origin>
//	<tree size>
//	<base64 root hash>
//
//	— <key name> <base64(key hash[4] || signature)>
//
// The verifier key is written "<name>+<hex key hash>+<base64(0x01 || public key)>",
// as golang.org/x/mod/sumdb/note expects.

const algEd25519 = 1

// keyHash is the first 4 bytes of SHA-256(name || "\n" || 0x01 || key).
func keyHash(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', algEd25519})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

func validKeyName(name string) bool {
	return name != "" && utf8.ValidString(name) && !strings.ContainsAny(name, " +\n\t")
}

// VerifierKey renders the public key as a note verifier key.
func VerifierKey(name string, pub ed25519.PublicKey) string {
	return fmt.Sprintf("%s+%08x+%s", name, keyHash(name, pub), base64.StdEncoding.EncodeToString(append([]byte{algEd25519}, pub...)))
}

// ParseVerifierKey reads "<name>+<hash>+<key>".
func ParseVerifierKey(s string) (name string, pub ed25519.PublicKey, err error) {
	parts := strings.SplitN(strings.TrimSpace(s), "+", 3) // the base64 key may hold "+"
	if len(parts) != 3 || !validKeyName(parts[0]) {
		return "", nil, errors.New("collector: malformed verifier key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.PublicKeySize || raw[0] != algEd25519 {
		return "", nil, errors.New("collector: verifier key is not an Ed25519 key")
	}
	pub = raw[1:]
	if fmt.Sprintf("%08x", keyHash(parts[0], pub)) != parts[1] {
		return "", nil, errors.New("collector: verifier key hash does not match")
	}
	return parts[0], pub, nil
}

// Checkpoint is a parsed checkpoint body.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   [32]byte
}

// Text is the checkpoint body.
func (c Checkpoint) Text() string {
	return c.Origin + "\n" + strconv.FormatInt(c.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n"
}

// SignNote signs text (ending in a newline) with key under name.
func SignNote(text, name string, key ed25519.PrivateKey) string {
	sig := ed25519.Sign(key, []byte(text))
	var kh [4]byte
	binary.BigEndian.PutUint32(kh[:], keyHash(name, key.Public().(ed25519.PublicKey)))
	return text + "\n— " + name + " " + base64.StdEncoding.EncodeToString(append(kh[:], sig...)) + "\n"
}

// OpenNote verifies a signed checkpoint note with the named key and
// parses its body.
func OpenNote(note, name string, pub ed25519.PublicKey) (Checkpoint, error) {
	text, sigs, ok := strings.Cut(note, "\n\n")
	if !ok || len(note) > 8<<10 {
		return Checkpoint{}, errors.New("collector: malformed note")
	}
	text += "\n"
	want := keyHash(name, pub)
	verified := false
	for _, line := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
		rest, ok := strings.CutPrefix(line, "— ")
		if !ok {
			return Checkpoint{}, errors.New("collector: malformed signature line")
		}
		n, b64, ok := strings.Cut(rest, " ")
		if !ok || n != name {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) != 4+ed25519.SignatureSize || binary.BigEndian.Uint32(raw[:4]) != want {
			continue
		}
		if ed25519.Verify(pub, []byte(text), raw[4:]) {
			verified = true
		}
	}
	if !verified {
		return Checkpoint{}, errors.New("collector: no valid signature by " + name)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return Checkpoint{}, errors.New("collector: checkpoint needs origin, size and root")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || (len(lines[1]) > 1 && lines[1][0] == '0') {
		return Checkpoint{}, errors.New("collector: bad tree size")
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return Checkpoint{}, errors.New("collector: bad root hash")
	}
	c := Checkpoint{Origin: lines[0], Size: size}
	copy(c.Root[:], root)
	return c, nil
}

// Merkle tree of RFC 6962 over the stored events' chain hashes, in store
// order: leaf = SHA-256(0x00 || hash), node = SHA-256(0x01 || left || right).

func leafHash(h []byte) [32]byte {
	return sha256.Sum256(append([]byte{0}, h...))
}

func nodeHash(l, r [32]byte) [32]byte {
	var b [65]byte
	b[0] = 1
	copy(b[1:], l[:])
	copy(b[33:], r[:])
	return sha256.Sum256(b[:])
}

// tree is the right edge of a Merkle tree: the roots of its perfect
// subtrees, largest first, enough to append and to compute the root.
type tree struct {
	size  int64
	stack [][32]byte
}

func (t *tree) append(h []byte) {
	n := leafHash(h)
	for s := t.size; s&1 == 1; s >>= 1 {
		n = nodeHash(t.stack[len(t.stack)-1], n)
		t.stack = t.stack[:len(t.stack)-1]
	}
	t.stack = append(t.stack, n)
	t.size++
}

// root is the RFC 6962 tree hash (SHA-256 of nothing for an empty tree).
func (t *tree) root() [32]byte {
	if len(t.stack) == 0 {
		return sha256.Sum256(nil)
	}
	r := t.stack[len(t.stack)-1]
	for i := len(t.stack) - 2; i >= 0; i-- {
		r = nodeHash(t.stack[i], r)
	}
	return r
}
