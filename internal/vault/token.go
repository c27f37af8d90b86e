package vault

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Token types: the vault's resources in the catalogue.
const (
	TypePAN      = "pan"
	TypeSSN      = "ssn"
	TypeEmail    = "email"
	TypePassport = "passport_id"
	TypeGeneric  = "generic"
)

// Types are all token types.
var Types = []string{TypePAN, TypeSSN, TypeEmail, TypePassport, TypeGeneric}

// MaxGeneric bounds a generic value.
const MaxGeneric = 4 << 10

// Errors callers branch on.
var (
	// ErrInvalidValue: a value that does not fit its type.
	ErrInvalidValue = errors.New("vault: value does not fit its type")
	// ErrInvalidToken: a string that cannot be a token of the type.
	ErrInvalidToken = errors.New("vault: not a token of this type")
	// ErrUnknownType: not a token type.
	ErrUnknownType = errors.New("vault: unknown token type")
)

// KnownType reports whether t is a token type.
func KnownType(t string) bool {
	for _, x := range Types {
		if x == t {
			return true
		}
	}
	return false
}

var (
	ssnRE      = regexp.MustCompile(`^(\d{3})-?(\d{2})-?(\d{4})$`)
	emailRE    = regexp.MustCompile(`^[A-Za-z0-9._%+\-]{1,64}@([A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)+)$`)
	passportRE = regexp.MustCompile(`^[A-Z0-9]{6,12}$`)
)

// Normalize checks that value fits typ and returns its canonical form
// (digits only for a card number, NNN-NN-NNNN for an SSN, a lower-case
// domain for an e-mail address, upper case for a passport number).
func Normalize(typ, value string) (string, error) {
	switch typ {
	case TypePAN:
		digits := make([]byte, 0, 19)
		for i := 0; i < len(value); i++ {
			switch c := value[i]; {
			case c >= '0' && c <= '9':
				digits = append(digits, c)
			case c == ' ' || c == '-':
			default:
				return "", fmt.Errorf("%w: a card number holds only digits, spaces and dashes", ErrInvalidValue)
			}
		}
		if len(digits) < 13 || len(digits) > 19 {
			return "", fmt.Errorf("%w: a card number has 13 to 19 digits", ErrInvalidValue)
		}
		if !luhn(digits) {
			return "", fmt.Errorf("%w: the card number fails the Luhn check", ErrInvalidValue)
		}
		return string(digits), nil
	case TypeSSN:
		m := ssnRE.FindStringSubmatch(value)
		if m == nil || m[1] == "000" || m[1] == "666" || m[1][0] == '9' || m[2] == "00" || m[3] == "0000" {
			return "", fmt.Errorf("%w: an SSN is NNN-NN-NNNN (area not 000, 666 or 9xx; group and serial not zero)", ErrInvalidValue)
		}
		return m[1] + "-" + m[2] + "-" + m[3], nil
	case TypeEmail:
		if len(value) > 254 || !emailRE.MatchString(value) {
			return "", fmt.Errorf("%w: not an e-mail address", ErrInvalidValue)
		}
		at := strings.LastIndexByte(value, '@')
		return value[:at] + "@" + strings.ToLower(value[at+1:]), nil
	case TypePassport:
		v := strings.ToUpper(strings.TrimSpace(value))
		if !passportRE.MatchString(v) {
			return "", fmt.Errorf("%w: a passport number is 6 to 12 letters and digits", ErrInvalidValue)
		}
		return v, nil
	case TypeGeneric:
		if value == "" || len(value) > MaxGeneric || !utf8.ValidString(value) {
			return "", fmt.Errorf("%w: a generic value is 1 to %d bytes of UTF-8", ErrInvalidValue, MaxGeneric)
		}
		return value, nil
	}
	return "", fmt.Errorf("%w %q", ErrUnknownType, clip(typ))
}

// luhn reports whether digits pass the Luhn check.
func luhn(digits []byte) bool {
	sum, double := 0, false
	for i := len(digits) - 1; i >= 0; i-- {
		d := int(digits[i] - '0')
		if double {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// Token prefixes of the non-card types.
var prefixes = map[string]string{TypeSSN: "tok_ssn_", TypeEmail: "tok_eml_", TypePassport: "tok_pid_", TypeGeneric: "tok_gen_"}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newToken makes a random token for a normalized value: a card number
// becomes digits of the same length that keep the last four and fail the
// Luhn check (so a token is never mistaken for a card); other types
// become tok_<type>_<128 random bits>, an e-mail address keeping its
// domain when keepDomain is set.
func newToken(typ, value string, keepDomain bool) (string, error) {
	if typ == TypePAN {
		n := len(value)
		b := make([]byte, n)
		for i := 0; i < n-4; i++ {
			d, err := rand.Int(rand.Reader, big.NewInt(10))
			if err != nil {
				return "", err
			}
			b[i] = byte('0' + d.Int64())
		}
		copy(b[n-4:], value[n-4:])
		if luhn(b) {
			// Changing one digit always changes the sum modulo 10 (the
			// Luhn digit map is a bijection): now it fails.
			b[0] = '0' + (b[0]-'0'+1)%10
		}
		return string(b), nil
	}
	var r [16]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	tok := prefixes[typ] + b32.EncodeToString(r[:])
	if typ == TypeEmail && keepDomain {
		tok += value[strings.LastIndexByte(value, '@'):]
	}
	return tok, nil
}

var tokenRE = regexp.MustCompile(`^tok_(ssn|eml|pid|gen)_[a-z2-7]{26}(@[a-z0-9.\-]{1,253})?$`)

// ParseToken checks that s has the shape of a token of typ.
func ParseToken(typ, s string) error {
	switch typ {
	case TypePAN:
		if len(s) < 13 || len(s) > 19 {
			return fmt.Errorf("%w: a card token has 13 to 19 digits", ErrInvalidToken)
		}
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return fmt.Errorf("%w: a card token has only digits", ErrInvalidToken)
			}
		}
		if luhn([]byte(s)) {
			return fmt.Errorf("%w: a card token never passes the Luhn check (this looks like a card number)", ErrInvalidToken)
		}
		return nil
	case TypeSSN, TypeEmail, TypePassport, TypeGeneric:
		m := tokenRE.FindStringSubmatch(s)
		if m == nil || "tok_"+m[1]+"_" != prefixes[typ] || (m[2] != "" && typ != TypeEmail) {
			return fmt.Errorf("%w: want %s followed by 26 base32 characters", ErrInvalidToken, prefixes[typ])
		}
		return nil
	}
	return fmt.Errorf("%w %q", ErrUnknownType, clip(typ))
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// TypeOf infers a token's type from its shape: digits are card tokens,
// tok_<code>_… the other types.
func TypeOf(token string) (string, bool) {
	for typ, p := range prefixes {
		if strings.HasPrefix(token, p) {
			return typ, ParseToken(typ, token) == nil
		}
	}
	if ParseToken(TypePAN, token) == nil {
		return TypePAN, true
	}
	return "", false
}
