package guard

import "github.com/spiffe/go-spiffe/v2/spiffeid"

// entryKey is one allowed (caller, resource, action). spiffeid.ID is
// comparable, so a lookup hashes three strings and allocates nothing.
type entryKey struct {
	id       spiffeid.ID
	resource string
	action   string
}

// index is an immutable view of one verified list; it is replaced, never
// changed.
type index struct {
	list    *AccessList
	jws     []byte
	allowed map[entryKey]struct{}
	callers map[spiffeid.ID]struct{}
}

// newIndex builds the lookup tables of a verified list.
func newIndex(l *AccessList, jws []byte) *index {
	ix := &index{list: l, jws: jws, allowed: map[entryKey]struct{}{}, callers: make(map[spiffeid.ID]struct{}, len(l.Consumers))}
	for _, c := range l.Consumers {
		id, err := spiffeid.FromString(c.ID)
		if err != nil { // checked by Verify
			continue
		}
		ix.callers[id] = struct{}{}
		for _, g := range c.Grants {
			for _, a := range g.Actions {
				ix.allowed[entryKey{id, g.Resource, a}] = struct{}{}
			}
		}
	}
	return ix
}

func (ix *index) version() int64 {
	if ix == nil {
		return 0
	}
	return ix.list.Version
}

// decide returns nil, ErrUnknownCaller, ErrActionNotAllowed or
// ErrNoAccessList.
func (ix *index) decide(caller spiffeid.ID, resource, action string) error {
	if ix == nil {
		return ErrNoAccessList
	}
	if _, ok := ix.allowed[entryKey{caller, resource, action}]; ok {
		return nil
	}
	if _, ok := ix.callers[caller]; ok {
		return ErrActionNotAllowed
	}
	return ErrUnknownCaller
}
