package callback

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HTTP headers of a callback request. See the package documentation for the signature scheme.
const (
	// HeaderTimestamp carries the signing time in Unix seconds (decimal).
	HeaderTimestamp = "X-Celerybridge-Timestamp"
	// HeaderSignature carries "v1=" and the hex HMAC-SHA256 of "<timestamp>.<raw body>". A
	// receiver accepts the request when any comma-separated v1 entry matches.
	HeaderSignature = "X-Celerybridge-Signature"
	// HeaderIdempotencyKey carries the event id.
	HeaderIdempotencyKey = "Idempotency-Key"
)

// signatureVersion prefixes each signature in HeaderSignature.
const signatureVersion = "v1="

// DefaultTolerance is how far a signed timestamp may be from the receiver's clock, either way.
const DefaultTolerance = 5 * time.Minute

// Sign returns the HeaderSignature value for body signed at unix time ts with secret:
// "v1=" + hex(HMAC-SHA256(secret, "<ts>.<body>")).
func Sign(secret []byte, ts int64, body []byte) string {
	return newSigner(secret).sign(ts, body)
}

// Verify checks the timestamp and signature headers of a request against its raw body. It
// returns nil when the timestamp is within tolerance of now (DefaultTolerance when tolerance <= 0)
// and one v1 entry of signature matches; otherwise an error wrapping ErrSignatureMissing,
// ErrSignatureInvalid or ErrSignatureExpired. The comparison takes constant time.
func Verify(secret []byte, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	return newSigner(secret).verify(timestamp, signature, body, now, tolerance)
}

// signer signs with one secret, reusing its HMAC states: building one per request was a
// tenth of the receiver's allocations. It is safe for concurrent use.
type signer struct{ macs sync.Pool }

func newSigner(secret []byte) *signer {
	key := append([]byte(nil), secret...)
	s := &signer{}
	s.macs.New = func() any { return hmac.New(sha256.New, key) }
	return s
}

func (s *signer) sign(ts int64, body []byte) string {
	mac := s.macs.Get().(hash.Hash)
	mac.Reset()
	var buf [24]byte
	mac.Write(strconv.AppendInt(buf[:0], ts, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	var sum [sha256.Size]byte
	mac.Sum(sum[:0])
	s.macs.Put(mac)
	out := make([]byte, len(signatureVersion)+hex.EncodedLen(len(sum)))
	copy(out, signatureVersion)
	hex.Encode(out[len(signatureVersion):], sum[:])
	return string(out)
}

func (s *signer) verify(timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	if timestamp == "" || signature == "" {
		return fmt.Errorf("%w: need both %s and %s", ErrSignatureMissing, HeaderTimestamp, HeaderSignature)
	}
	ts, err := strconv.ParseInt(strings.TrimSpace(timestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %s is not Unix seconds: %q", ErrSignatureInvalid, HeaderTimestamp, timestamp)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if skew := now.Sub(time.Unix(ts, 0)); skew > tolerance || skew < -tolerance {
		return fmt.Errorf("%w: timestamp %d is %v from now (tolerance %v)", ErrSignatureExpired, ts, skew.Round(time.Second), tolerance)
	}
	want := s.sign(ts, body)
	for part := range strings.SplitSeq(signature, ",") {
		part = strings.TrimSpace(part)
		if !strings.HasPrefix(part, signatureVersion) {
			continue
		}
		if subtle.ConstantTimeCompare([]byte(part), []byte(want)) == 1 {
			return nil
		}
	}
	return fmt.Errorf("%w: no %s entry matches", ErrSignatureInvalid, signatureVersion[:2])
}
