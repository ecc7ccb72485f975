package rig

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/gomodule/redigo/redis"
)

// How the rig's pools keep connections honest after Redis hung or restarted.
const (
	// checkIdleAfter: a connection idle this long is PINGed before use. A restart takes Redis
	// away for longer than this, so the connections that sat in the pool meanwhile are tested
	// (and the dead ones dropped) before they fail a request.
	checkIdleAfter = time.Second
	// borrowCheckTimeout bounds that PING, so a hung Redis cannot hang the check.
	borrowCheckTimeout = 500 * time.Millisecond
)

// checkedPool is a redigo pool whose connections are PINGed before use when they sat idle
// (checkIdleAfter) or were last used before a connection of the pool was seen broken (a
// restart breaks them all at once). It satisfies celerycompat.Pool; it is safe for concurrent
// use.
type checkedPool struct {
	*redis.Pool
	lastBreak atomic.Int64 // Unix ns of the last broken connection seen
}

// newCheckedPool returns a pool of at most size connections to u.
func newCheckedPool(u *celerycompat.RedisURL, size int) *checkedPool {
	p := &checkedPool{Pool: u.NewPool(size)}
	own := p.Pool.TestOnBorrow // a sentinel pool's refuses connections to a former master
	p.Pool.TestOnBorrow = func(c redis.Conn, lastUsed time.Time) error {
		if own != nil {
			if err := own(c, lastUsed); err != nil {
				return err
			}
		}
		if time.Since(lastUsed) < checkIdleAfter && lastUsed.UnixNano() > p.lastBreak.Load() {
			return nil
		}
		_, err := redis.DoWithTimeout(c, borrowCheckTimeout, "PING")
		p.observe(err) // one dead connection found: test the other old ones too
		return err
	}
	return p
}

// GetContext implements celerycompat.Pool: the connection reports broken connections back to
// the pool.
func (p *checkedPool) GetContext(ctx context.Context) (redis.Conn, error) {
	c, err := p.Pool.GetContext(ctx)
	if err != nil {
		p.observe(err)
		return nil, err
	}
	return &watchedConn{Conn: c, pool: p}, nil
}

// observe records err when it says the connection broke.
func (p *checkedPool) observe(err error) {
	if brokenConn(err) {
		p.lastBreak.Store(time.Now().UnixNano())
	}
}

// brokenConn reports whether err says the connection itself failed (closed by the server,
// reset, refused), as opposed to a Redis error reply or a deadline.
func brokenConn(err error) bool {
	if err == nil {
		return false
	}
	var re redis.Error
	if errors.As(err, &re) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed)
}

// watchedConn reports its errors to its pool. It implements redis.ConnWithContext and
// redis.ConnWithTimeout, as the pool's own connections do.
type watchedConn struct {
	redis.Conn
	pool *checkedPool
}

func (c *watchedConn) Do(cmd string, args ...any) (any, error) {
	v, err := c.Conn.Do(cmd, args...)
	c.pool.observe(err)
	return v, err
}

func (c *watchedConn) Receive() (any, error) {
	v, err := c.Conn.Receive()
	c.pool.observe(err)
	return v, err
}

func (c *watchedConn) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	v, err := redis.DoContext(c.Conn, ctx, cmd, args...)
	c.pool.observe(err)
	return v, err
}

func (c *watchedConn) ReceiveContext(ctx context.Context) (any, error) {
	v, err := redis.ReceiveContext(c.Conn, ctx)
	c.pool.observe(err)
	return v, err
}

func (c *watchedConn) DoWithTimeout(d time.Duration, cmd string, args ...any) (any, error) {
	v, err := redis.DoWithTimeout(c.Conn, d, cmd, args...)
	c.pool.observe(err)
	return v, err
}

func (c *watchedConn) ReceiveWithTimeout(d time.Duration) (any, error) {
	v, err := redis.ReceiveWithTimeout(c.Conn, d)
	c.pool.observe(err)
	return v, err
}

// retryBroken runs step, and once more on a fresh connection when it failed because its
// connection was broken (a stale connection from before a Redis restart). Only for idempotent
// steps: a broken connection leaves unknown whether the command ran.
func retryBroken(ctx context.Context, step func(ctx context.Context) error) error {
	err := step(ctx)
	if brokenConn(err) && ctx.Err() == nil {
		err = step(ctx)
	}
	return err
}

// ping checks one pool: PING, retried once on a broken connection.
func ping(ctx context.Context, p celerycompat.Pool) error {
	return retryBroken(ctx, func(ctx context.Context) error {
		c, err := p.GetContext(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = redis.DoContext(c, ctx, "PING")
		return err
	})
}
