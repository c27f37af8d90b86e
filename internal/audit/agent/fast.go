package agent

import (
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/wardsec/ward/audit"
)

// The fast path of prepare: a line that is a canonical event (the keys
// audit.Event encodes, each once, with the right types) is redacted in
// its parsed form and re-encoded, without decoding into an Event. Any
// other line takes the general path, which gives the same result.

var (
	parsers fastjson.ParserPool
	arenas  fastjson.ArenaPool
)

// eventKeys are the keys of an encoded audit.Event and whether each is a
// string (else: v is a number, extra an object).
var eventKeys = map[string]int{
	"v": 0, "time": 1, "service": 2, "instance": 3, "host": 4, "cid": 5, "kind": 6, "caller": 7, "user": 8,
	"action": 9, "resource": 10, "decision": 11, "reason": 12, "policy_version": 13, "credential_fp": 14, "extra": 15,
}

const (
	keyV     = 0
	keyTime  = 1
	keyHost  = 4
	keyKind  = 6
	keyExtra = 15
)

// prepareFast returns the prepared line, or false when line is not a
// canonical event.
func (a *Agent) prepareFast(line []byte) ([]byte, bool) {
	// Strict JSON only (the parser alone is lenient), and no raw control
	// bytes: what encoding/json would refuse goes the general way.
	for i, c := range line {
		if c < 0x20 {
			return nil, false
		}
		// \uD800–\uDFFF: the decoders disagree on lone surrogates.
		if c == '\\' && i+3 < len(line) && line[i+1] == 'u' && (line[i+2] == 'd' || line[i+2] == 'D') && !(line[i+3] >= '0' && line[i+3] <= '7') {
			return nil, false
		}
	}
	if fastjson.ValidateBytes(line) != nil || !utf8.Valid(line) {
		return nil, false
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(line)
	if err != nil || v.Type() != fastjson.TypeObject {
		return nil, false
	}
	o, _ := v.Object()
	var seen uint32
	ok := true
	var hostEmpty = true
	var extra *fastjson.Value
	o.Visit(func(k []byte, x *fastjson.Value) {
		i, known := eventKeys[string(k)]
		if !known || seen&(1<<i) != 0 {
			ok = false
			return
		}
		seen |= 1 << i
		switch i {
		case keyV:
			if n, err := x.Int(); err != nil || n != audit.SchemaVersion {
				ok = false
			}
		case keyExtra:
			if x.Type() != fastjson.TypeObject {
				ok = false
			}
			extra = x
		default:
			if x.Type() != fastjson.TypeString {
				ok = false
				return
			}
			s := x.GetStringBytes()
			switch i {
			case keyKind:
				ok = ok && len(s) > 0 && len(s) <= 64
			case keyTime:
				t, err := time.Parse(time.RFC3339Nano, string(s))
				ok = ok && err == nil && !t.IsZero()
			case keyHost:
				hostEmpty = len(s) == 0
			}
		}
	})
	if !ok || seen&(1<<keyV) == 0 || seen&(1<<keyKind) == 0 || seen&(1<<keyTime) == 0 {
		return nil, false
	}
	ar := arenas.Get()
	defer arenas.Put(ar)
	defer ar.Reset()
	if hostEmpty {
		o.Set("host", ar.NewString(a.cfg.Host))
	}
	if a.cfg.Container != "" {
		if extra == nil {
			extra = ar.NewObject()
			o.Set("extra", extra)
		}
		extra.Set("container", ar.NewString(a.cfg.Container))
	}
	// The whole object, as Event does: every string field, and extra
	// value by value (sensitive keys included).
	changed := false
	var keys []string
	var vals []*fastjson.Value
	o.Visit(func(k []byte, x *fastjson.Value) {
		if string(k) == "v" || string(k) == "time" { // as Event: never redacted
			return
		}
		key := k
		if string(k) != "extra" {
			key = nil // top-level fields are redacted as text, not by name
		}
		if nx, ch := a.cfg.Redactor.JSON(key, x, ar); ch {
			changed = true
			if nx != nil {
				keys, vals = append(keys, string(k)), append(vals, nx)
			}
		}
	})
	for i, k := range keys {
		o.Set(k, vals[i])
	}
	if changed {
		a.redacted.Add(1)
	}
	out := v.MarshalTo(make([]byte, 0, len(line)+64))
	// A string with characters the encoder escapes the Go way
	// (\x02, \a) would not be JSON: such lines go the general way.
	if fastjson.ValidateBytes(out) != nil {
		return nil, false
	}
	return out, true
}
