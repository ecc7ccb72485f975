package gocelery

import (
	"testing"
	"time"
)

// A task whose result cannot be stored runs again after a wait that doubles, not every second.
func TestStoreRetryDelayBacksOff(t *testing.T) {
	for _, c := range []struct {
		retries int
		want    time.Duration
	}{{-1, time.Second}, {0, time.Second}, {1, 2 * time.Second}, {5, 32 * time.Second},
		{8, 256 * time.Second}, {9, 5 * time.Minute}, {1000, 5 * time.Minute}} {
		if got := storeRetryDelay(c.retries); got != c.want {
			t.Errorf("storeRetryDelay(%d) = %v, want %v", c.retries, got, c.want)
		}
	}
}
