package rig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/gomodule/redigo/redis"
)

// TestBrokenConn: only a failed connection is retried, never a Redis error reply or a deadline
// (a command that may have run, or a Redis that hangs).
func TestBrokenConn(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{io.EOF, true},
		{fmt.Errorf("record task ids: %w", io.EOF), true},
		{&net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{&net.OpError{Op: "write", Err: os.NewSyscallError("write", syscall.EPIPE)}, true},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true},
		{nil, false},
		{redis.Error("ERR wrong number of arguments"), false},
		{context.DeadlineExceeded, false},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false},
		{errors.New("something else"), false},
	} {
		if got := brokenConn(tt.err); got != tt.want {
			t.Errorf("brokenConn(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestRetryBroken: a step failing on a broken connection runs once more, and only once.
func TestRetryBroken(t *testing.T) {
	calls := 0
	err := retryBroken(context.Background(), func(context.Context) error { calls++; return io.EOF })
	if calls != 2 || !errors.Is(err, io.EOF) {
		t.Errorf("always broken: %d calls, %v", calls, err)
	}
	calls = 0
	err = retryBroken(context.Background(), func(context.Context) error { calls++; return redis.Error("ERR x") })
	if calls != 1 || err == nil {
		t.Errorf("error reply: %d calls, %v", calls, err)
	}
}
