package callback

import (
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Backoff defaults.
const (
	DefaultBackoffBase   = time.Second
	DefaultBackoffCap    = 5 * time.Minute
	DefaultBackoffFactor = 2.0
)

// backoff computes retry delays: base·factor^(attempt-1), capped, with "equal jitter" (a random
// point in the upper half), so that retries of many events spread out but never come sooner than
// half the nominal delay.
type backoff struct {
	base, cap time.Duration
	factor    float64
	// rand returns a number in [0, 1); nil means math/rand/v2.
	rand func() float64
}

// delay returns the wait before the attempt after attempt (1-based).
func (b backoff) delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(b.base) * math.Pow(b.factor, float64(attempt-1))
	if d > float64(b.cap) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(b.cap)
	}
	r := b.rand
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(d/2 + r()*d/2)
}

// retryable reports whether an HTTP status is worth retrying: 408, 429 and every 5xx.
func retryable(status int) bool {
	return status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500
}

// parseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date. ok is false when
// the header is absent or unusable. A date in the past gives 0.
func parseRetryAfter(h string, now time.Time) (d time.Duration, ok bool) {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(math.MaxInt64/time.Second) {
			secs = int64(math.MaxInt64 / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(h)
	if err != nil {
		return 0, false
	}
	if d = t.Sub(now); d < 0 {
		d = 0
	}
	return d, true
}
