package callback

import (
	"net/http"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	b := backoff{base: 100 * time.Millisecond, cap: time.Second, factor: 2}
	tests := []struct {
		attempt int
		nominal time.Duration
	}{
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{1000, time.Second},
	}
	for _, tt := range tests {
		for _, r := range []float64{0, 0.5, 0.999999} {
			b.rand = func() float64 { return r }
			got := b.delay(tt.attempt)
			want := tt.nominal/2 + time.Duration(r*float64(tt.nominal/2))
			if got != want {
				t.Errorf("attempt %d rand %v: delay %v, want %v", tt.attempt, r, got, want)
			}
		}
	}
	b.rand = nil
	for range 100 {
		if d := b.delay(3); d < 200*time.Millisecond || d >= 400*time.Millisecond {
			t.Fatalf("attempt 3: delay %v outside [200ms, 400ms)", d)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 12, 19, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"", 0, false},
		{"7", 7 * time.Second, true},
		{" 0 ", 0, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"Friday, 19-Dec-25 12:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"soon", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			got, ok := parseRetryAfter(tt.header, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.header, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	for status, want := range map[int]bool{
		200: false, 301: false, 400: false, 401: false, 404: false, 409: false, 410: false, 422: false,
		408: true, 429: true, 500: true, 502: true, 503: true, 504: true,
	} {
		if got := retryable(status); got != want {
			t.Errorf("retryable(%d) = %v, want %v", status, got, want)
		}
	}
}
