package authority

import (
	"hash/maphash"
	"net"
	"net/http"
	"strconv"

	"golang.org/x/time/rate"

	"github.com/wardsec/ward/internal/problem"
)

// failureBuckets is the number of rate limiters client addresses are
// hashed onto: the limiter's memory is fixed however many addresses an
// attacker uses; addresses that share a bucket share its budget.
const failureBuckets = 4096

const slugTooManyFailures = "too-many-failures"

// failureLimiter bounds failed authentications (401s) per client address.
// A client whose bucket is exhausted is answered 429 before its credential
// is even looked up, so guessing tokens or replaying expired certificates
// cannot turn into unbounded store lookups. Successful requests cost
// nothing.
type failureLimiter struct {
	seed    maphash.Seed
	retry   string // Retry-After seconds
	buckets [failureBuckets]*rate.Limiter
}

func newFailureLimiter(perSecond float64, burst int) *failureLimiter {
	f := &failureLimiter{seed: maphash.MakeSeed()}
	for i := range f.buckets {
		f.buckets[i] = rate.NewLimiter(rate.Limit(perSecond), burst)
	}
	retry := 1
	if perSecond > 0 && perSecond < 1 {
		retry = int(1/perSecond) + 1
	}
	f.retry = strconv.Itoa(retry)
	return f
}

func (f *failureLimiter) bucket(r *http.Request) *rate.Limiter {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return f.buckets[maphash.String(f.seed, host)%failureBuckets]
}

// exhausted reports whether r's client has used up its failure budget
// (never, for a nil limiter: limiting is off).
func (f *failureLimiter) exhausted(r *http.Request) bool {
	return f != nil && f.bucket(r).Tokens() < 1
}

// charge records one failed authentication of r's client.
func (f *failureLimiter) charge(r *http.Request) {
	if f != nil {
		f.bucket(r).Allow()
	}
}

func (f *failureLimiter) refuse(w http.ResponseWriter) {
	w.Header().Set("Retry-After", f.retry)
	problem.Write(w, problem.New(http.StatusTooManyRequests, slugTooManyFailures, "Too many failed authentications",
		"this client failed to authenticate too often; wait before trying again"))
}
