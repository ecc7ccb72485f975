package callback

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestSignMatchesPython(t *testing.T) {
	// hmac.new(b"secret", b"1700000000." + body, hashlib.sha256).hexdigest()
	body := []byte(`{"task_id":"t1","status":"success"}`)
	want := "v1=75c46dfb52a65e98337310dbafc1b04b1ec19b508b9d7a6142dda8ca5c240d73"
	if got := Sign([]byte("secret"), 1700000000, body); got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	secret := []byte("s3cret")
	body := []byte(`{"task_id":"t1","status":"success"}`)
	now := time.Unix(1_700_000_000, 0)
	ts := fmt.Sprint(now.Unix())
	good := Sign(secret, now.Unix(), body)
	tests := []struct {
		name      string
		secret    []byte
		timestamp string
		signature string
		body      []byte
		now       time.Time
		want      error
	}{
		{"valid", secret, ts, good, body, now, nil},
		{"valid among several entries", secret, ts, "v1=00ff, " + good, body, now, nil},
		{"valid at edge of window", secret, ts, good, body, now.Add(5 * time.Minute), nil},
		{"missing timestamp", secret, "", good, body, now, ErrSignatureMissing},
		{"missing signature", secret, ts, "", body, now, ErrSignatureMissing},
		{"timestamp not a number", secret, "yesterday", good, body, now, ErrSignatureInvalid},
		{"wrong secret", []byte("other"), ts, good, body, now, ErrSignatureInvalid},
		{"body changed", secret, ts, good, []byte(`{"task_id":"t2","status":"success"}`), now, ErrSignatureInvalid},
		{"timestamp changed", secret, fmt.Sprint(now.Unix() + 1), good, body, now, ErrSignatureInvalid},
		{"unknown version", secret, ts, "v2=" + good[3:], body, now, ErrSignatureInvalid},
		{"uppercase hex", secret, ts, "v1=" + upper(good[3:]), body, now, ErrSignatureInvalid},
		{"stale", secret, ts, good, body, now.Add(5*time.Minute + time.Second), ErrSignatureExpired},
		{"from the future", secret, ts, good, body, now.Add(-6 * time.Minute), ErrSignatureExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.secret, tt.timestamp, tt.signature, tt.body, tt.now, 0)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// FuzzVerify: never panics, and a signature made by Sign always verifies.
func FuzzVerify(f *testing.F) {
	f.Add([]byte("s"), "1700000000", "v1=00", []byte(`{}`), int64(1700000000))
	f.Add([]byte(""), "", "", []byte(nil), int64(0))
	f.Add([]byte("k"), "-9223372036854775808", "v1=,v1=", []byte("x"), int64(-1))
	f.Fuzz(func(t *testing.T, secret []byte, ts, sig string, body []byte, now int64) {
		_ = Verify(secret, ts, sig, body, time.Unix(now, 0), 0)
		good := Sign(secret, now, body)
		if err := Verify(secret, fmt.Sprint(now), good, body, time.Unix(now, 0), 0); err != nil {
			t.Fatalf("own signature rejected: %v", err)
		}
	})
}
