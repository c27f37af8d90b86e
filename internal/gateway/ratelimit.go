package gateway

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiterSet holds one token bucket per key (a client address, a
// subject), bounded: when it is full, idle buckets are dropped first and
// then arbitrary ones, so a flood of distinct keys costs bounded memory
// (a dropped bucket starts full again, which only ever errs towards
// admitting a returning key).
type limiterSet struct {
	perSecond rate.Limit
	burst     int
	max       int
	now       func() time.Time

	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newLimiterSet(perSecond float64, burst, max int, now func() time.Time) *limiterSet {
	return &limiterSet{perSecond: rate.Limit(perSecond), burst: burst, max: max, now: now, m: map[string]*bucket{}}
}

// allow takes one token from key's bucket with the set's rate; when none
// is left it returns how long until one is.
func (s *limiterSet) allow(key string) (bool, time.Duration) {
	return s.allowRate(key, s.perSecond, s.burst)
}

// allowRate is allow with a per-call rate (route-specific limits share one
// bounded set).
func (s *limiterSet) allowRate(key string, perSecond rate.Limit, burst int) (bool, time.Duration) {
	if perSecond <= 0 || burst <= 0 {
		return true, 0
	}
	now := s.now()
	s.mu.Lock()
	b, ok := s.m[key]
	if !ok {
		if len(s.m) >= s.max {
			s.evictLocked(now)
		}
		b = &bucket{lim: rate.NewLimiter(perSecond, burst)}
		s.m[key] = b
	} else if b.lim.Limit() != perSecond || b.lim.Burst() != burst {
		b.lim.SetLimitAt(now, perSecond)
		b.lim.SetBurstAt(now, burst)
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	s.mu.Unlock()
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// evictLocked drops buckets idle for a minute, then arbitrary ones until
// a tenth of the set is free.
func (s *limiterSet) evictLocked(now time.Time) {
	for k, b := range s.m {
		if now.Sub(b.last) > time.Minute {
			delete(s.m, k)
		}
	}
	for k := range s.m {
		if len(s.m) < s.max-s.max/10 {
			break
		}
		delete(s.m, k)
	}
}

func (s *limiterSet) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// retryAfter renders a delay as whole seconds for Retry-After (at least 1).
func retryAfter(h http.Header, d time.Duration) {
	h.Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))))
}
