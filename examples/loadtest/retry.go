package main

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// Bounds on the waits between retries of a 503 answer.
const (
	// defaultRetryWait is the wait when a 503 answer names none (Retry-After absent or unreadable).
	defaultRetryWait = 250 * time.Millisecond
	// maxRetryWait caps one wait, whatever Retry-After asks: the submission's own deadline
	// (-request-timeout) bounds them all anyway.
	maxRetryWait = 10 * time.Second
)

// retryTransport is an http.RoundTripper that sends a request again when the API answers 503
// Service Unavailable (overloaded: all its MAX_CONCURRENT slots taken; or Redis unreachable, as
// during a Sentinel failover), after the wait its Retry-After header asks for, at most max
// times. A request whose deadline would pass during the wait gets the 503 answer instead. It is
// safe for concurrent use.
//
// A 503 from the overload guard is sent before the request is read, so retrying it cannot
// submit a task twice. A 503 after Redis failed mid-publish might, rarely: that task then runs,
// untracked by the report (it counts the submissions the API accepted).
type retryTransport struct {
	next  http.RoundTripper
	max   int
	sleep func(ctx context.Context, d time.Duration) error // nil: a timer
	now   func() time.Time                                 // nil: time.Now

	retried atomic.Int64 // 503 answers followed by another attempt
	gaveUp  atomic.Int64 // requests answered 503 after max retries (or out of time)
	waited  atomic.Int64 // nanoseconds spent waiting before retries
}

// RoundTrip implements http.RoundTripper.
func (rt *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		r := req
		if attempt > 0 {
			r = req.Clone(req.Context())
			if req.Body != nil && req.Body != http.NoBody {
				body, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				r.Body = body
			}
		}
		resp, err := rt.next.RoundTrip(r)
		if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
			return resp, err
		}
		wait := rt.retryAfter(resp.Header.Get("Retry-After"))
		replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
		if attempt >= rt.max || !replayable || !rt.hasTime(req.Context(), wait) {
			rt.gaveUp.Add(1)
			return resp, nil
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)) // so the connection is reused
		resp.Body.Close()
		rt.retried.Add(1)
		rt.waited.Add(int64(wait))
		if err := rt.wait(req.Context(), wait); err != nil {
			return nil, err
		}
	}
}

// retryAfter is the wait a Retry-After value asks for, in seconds or as an HTTP date
// (RFC 9110, section 10.2.3), within [0, maxRetryWait]; defaultRetryWait when there is none.
func (rt *retryTransport) retryAfter(v string) time.Duration {
	if v == "" {
		return defaultRetryWait
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil {
		d = time.Duration(s) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = at.Sub(rt.clock())
	} else {
		return defaultRetryWait
	}
	return min(max(d, 0), maxRetryWait)
}

func (rt *retryTransport) clock() time.Time {
	if rt.now != nil {
		return rt.now()
	}
	return time.Now()
}

// hasTime reports whether ctx allows waiting d and trying once more.
func (rt *retryTransport) hasTime(ctx context.Context, d time.Duration) bool {
	dl, ok := ctx.Deadline()
	return !ok || rt.clock().Add(d).Before(dl)
}

func (rt *retryTransport) wait(ctx context.Context, d time.Duration) error {
	if rt.sleep != nil {
		return rt.sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
