package celerycompat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"
)

// This file follows a Redis master through Redis Sentinel, the way redis-py's Sentinel (which
// kombu and Celery use) does: ask the sentinels where the master is, check its ROLE, and drop
// connections that prove stale. It is written here rather than taken from a library: the one
// redigo companion for Sentinel (github.com/FZambia/sentinel) is not reachable through the Go
// module proxy this project builds with, has no context-aware dial, and leaves dropping stale
// pooled connections to the caller, which is most of the work.

// ErrNoMaster marks a sentinel:// dial that found no usable master: no sentinel answered, none
// knows the master name, or the address they gave is not (or no longer) a master.
var ErrNoMaster = errors.New("celerycompat: sentinel: no master")

// DefaultSentinelPort is the port of a sentinel:// entry that names none (Sentinel's own default).
const DefaultSentinelPort = "26379"

// sentinelTimeout bounds each exchange with one sentinel, so a dead one costs little.
const sentinelTimeout = time.Second

// parseSentinelURL reads "sentinel://[user:pw@]h1[:port][/db];sentinel://h2[:port]...". As in
// kombu (Connection takes the first of the ";"-separated URLs as its own) and Celery's
// SentinelBackend (db, password and username of hosts[0]), credentials and database come from the
// first entry only.
func parseSentinelURL(raw string) (*RedisURL, error) {
	r := &RedisURL{Network: "tcp"}
	for i, chunk := range strings.Split(raw, ";") {
		chunk = strings.TrimSpace(chunk)
		if chunk == "" {
			continue
		}
		u, err := url.Parse(chunk)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidURL, err)
		}
		if u.Scheme != "sentinel" {
			return nil, fmt.Errorf("%w: %s: every entry of a sentinel URL must be sentinel://", ErrInvalidURL, redact(u))
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "localhost"
		}
		if port == "" {
			port = DefaultSentinelPort
		}
		r.Sentinels = append(r.Sentinels, host+":"+port)
		if i > 0 {
			continue
		}
		if u.User != nil {
			r.Username = u.User.Username()
			r.Password, _ = u.User.Password()
		}
		if p := strings.Trim(u.Path, "/"); p != "" {
			if r.DB, err = strconv.Atoi(p); err != nil || r.DB < 0 {
				return nil, fmt.Errorf("%w: database %q in %s", ErrInvalidURL, p, redact(u))
			}
		}
		if v := u.Query().Get("db"); v != "" {
			if r.DB, err = strconv.Atoi(v); err != nil || r.DB < 0 {
				return nil, fmt.Errorf("%w: db=%q in %s", ErrInvalidURL, v, redact(u))
			}
		}
	}
	if len(r.Sentinels) == 0 {
		return nil, fmt.Errorf("%w: sentinel URL names no sentinel", ErrInvalidURL)
	}
	return r, nil
}

// sentinelResolver finds the current master. It is safe for concurrent use.
type sentinelResolver struct {
	sentinels []string
	name      string
	password  string
	opts      []redis.DialOption // for the master

	mu        sync.Mutex
	preferred int // index of the sentinel that answered last

	// gen counts the failovers seen; a connection dialled under an older gen is dropped on borrow.
	gen atomic.Uint64
}

// masterAddr asks the sentinels, the last one that answered first, where the master is.
func (s *sentinelResolver) masterAddr(ctx context.Context) (string, error) {
	s.mu.Lock()
	start := s.preferred
	s.mu.Unlock()
	var errs []error
	for k := range s.sentinels {
		i := (start + k) % len(s.sentinels)
		addr, err := s.ask(ctx, s.sentinels[i])
		if err == nil {
			s.mu.Lock()
			s.preferred = i
			s.mu.Unlock()
			return addr, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return "", fmt.Errorf("%w %q: %w", ErrNoMaster, s.name, errors.Join(errs...))
}

func (s *sentinelResolver) ask(ctx context.Context, sentinel string) (string, error) {
	opts := []redis.DialOption{redis.DialConnectTimeout(sentinelTimeout),
		redis.DialReadTimeout(sentinelTimeout), redis.DialWriteTimeout(sentinelTimeout)}
	if s.password != "" {
		opts = append(opts, redis.DialPassword(s.password))
	}
	c, err := redis.DialContext(ctx, "tcp", sentinel, opts...)
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", sentinel, err)
	}
	defer c.Close()
	addr, err := rdb.SentinelMaster(ctx, c, s.name)
	if errors.Is(err, rdb.ErrUnknownMaster) {
		return "", fmt.Errorf("sentinel %s does not monitor a master named %q", sentinel, s.name)
	}
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", sentinel, err)
	}
	return addr, nil
}

// dial connects to the master the sentinels name and checks it is one.
func (s *sentinelResolver) dial(ctx context.Context) (redis.Conn, error) {
	gen := s.gen.Load()
	addr, err := s.masterAddr(ctx)
	if err != nil {
		return nil, err
	}
	c, err := redis.DialContext(ctx, "tcp", addr, s.opts...)
	if err != nil {
		return nil, fmt.Errorf("%w %q: dial %s: %w", ErrNoMaster, s.name, addr, err)
	}
	r, err := rdb.Role(ctx, c)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w %q: ROLE at %s: %w", ErrNoMaster, s.name, addr, err)
	}
	if r != "master" {
		c.Close()
		s.stale(gen)
		return nil, fmt.Errorf("%w %q: %s is a %s (failover under way?)", ErrNoMaster, s.name, addr, r)
	}
	return &sentinelConn{Conn: c, res: s, gen: gen}, nil
}

// stale records that connections of generation gen reach a master that is gone.
func (s *sentinelResolver) stale(gen uint64) { s.gen.CompareAndSwap(gen, gen+1) }

// newSentinelPool is NewPool for a sentinel:// URL.
func (r *RedisURL) newSentinelPool(maxActive int) *redis.Pool {
	res := &sentinelResolver{sentinels: r.Sentinels, name: r.MasterName, password: r.SentinelPassword,
		opts: r.DialOptions()}
	return &redis.Pool{
		MaxIdle:     max(8, maxActive),
		MaxActive:   maxActive,
		Wait:        maxActive > 0,
		IdleTimeout: 4 * time.Minute,
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			if res.name == "" {
				return nil, fmt.Errorf("%w: sentinel URL without a master name (Celery's master_name transport option)", ErrInvalidURL)
			}
			return res.dial(ctx)
		},
		TestOnBorrow: func(c redis.Conn, t time.Time) error {
			if sc, ok := c.(*sentinelConn); ok && sc.gen != res.gen.Load() {
				return errStaleMaster
			}
			if time.Since(t) < time.Minute {
				return nil
			}
			return rdb.Ping(c)
		},
	}
}

// errStaleMaster is the Err of a connection to a master that has been replaced; the pool drops it.
var errStaleMaster = fmt.Errorf("%w: connection to a former master", ErrNoMaster)

// sentinelConn is a connection to a master found through the sentinels. A broken connection or a
// READONLY answer (the master was demoted) marks every connection of its generation stale, and
// Err reports it so that redigo's pool closes it instead of keeping it idle.
type sentinelConn struct {
	redis.Conn
	res    *sentinelResolver
	gen    uint64
	broken atomic.Bool
}

func (c *sentinelConn) check(err error) {
	if err == nil {
		return
	}
	var rerr redis.Error
	var nerr net.Error
	switch {
	case errors.As(err, &rerr):
		if !strings.Contains(string(rerr), "READONLY") {
			return
		}
	case c.Conn.Err() == nil:
		return // a local error (bad argument) that left the connection usable
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &nerr) && nerr.Timeout():
		return // this connection is done (redigo closes it), the master may well be fine
	}
	c.broken.Store(true)
	c.res.stale(c.gen)
}

// Err is the connection's error; it is errStaleMaster once the connection proved stale.
func (c *sentinelConn) Err() error {
	if err := c.Conn.Err(); err != nil {
		return err
	}
	if c.broken.Load() {
		return errStaleMaster
	}
	return nil
}

// Do runs a command.
func (c *sentinelConn) Do(cmd string, args ...any) (any, error) {
	v, err := c.Conn.Do(cmd, args...)
	c.check(err)
	return v, err
}

// Flush sends the buffered commands.
func (c *sentinelConn) Flush() error {
	err := c.Conn.Flush()
	c.check(err)
	return err
}

// Receive reads one reply.
func (c *sentinelConn) Receive() (any, error) {
	v, err := c.Conn.Receive()
	c.check(err)
	return v, err
}

// DoContext runs a command bounded by ctx.
func (c *sentinelConn) DoContext(ctx context.Context, cmd string, args ...any) (any, error) {
	v, err := redis.DoContext(c.Conn, ctx, cmd, args...)
	c.check(err)
	return v, err
}

// ReceiveContext reads one reply bounded by ctx.
func (c *sentinelConn) ReceiveContext(ctx context.Context) (any, error) {
	v, err := redis.ReceiveContext(c.Conn, ctx)
	c.check(err)
	return v, err
}

// DoWithTimeout runs a command with a read timeout.
func (c *sentinelConn) DoWithTimeout(d time.Duration, cmd string, args ...any) (any, error) {
	v, err := redis.DoWithTimeout(c.Conn, d, cmd, args...)
	c.check(err)
	return v, err
}

// ReceiveWithTimeout reads one reply with a read timeout.
func (c *sentinelConn) ReceiveWithTimeout(d time.Duration) (any, error) {
	v, err := redis.ReceiveWithTimeout(c.Conn, d)
	c.check(err)
	return v, err
}

// ErrNotReplicated marks a publish that the master accepted but fewer than
// BrokerConfig.WaitReplicas replicas confirmed within WaitTimeout. The message may be delivered
// or, if the master fails before replicating it, lost; publishing again may deliver it twice.
var ErrNotReplicated = errors.New("celerycompat: not replicated")

// waitReplicas runs WAIT after a publish pipeline on c and fails the messages of todo that were
// published (errs[i] == nil) with ErrNotReplicated when fewer replicas than asked confirmed them.
//
// The guarantee: Redis Sentinel promotes a replica; writes the master acknowledged but had not
// yet sent to it are gone. Without WaitReplicas a task whose Send returned nil can be lost if the
// master dies within the replication lag (usually well under a millisecond on a LAN, more under
// load). With WaitReplicas=1 a nil from Send means one replica held the message, so a failover to
// that replica keeps it; Redis' WAIT is still not a consensus (a failover may pick another
// replica), and every publish pays one more round trip plus the replica's lag.
func (b *Broker) waitReplicas(ctx context.Context, c redis.Conn, msgs []*Message, todo []int, errs []error) {
	timeout := b.cfg.WaitTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	got, err := rdb.WaitReplicas(ctx, c, b.cfg.WaitReplicas, timeout)
	if err == nil && got >= b.cfg.WaitReplicas {
		return
	}
	for _, i := range todo {
		if errs[i] != nil {
			continue
		}
		if err != nil {
			errs[i] = fmt.Errorf("%w: publish task %s: wait for %d replicas: %w", ErrNotReplicated, msgs[i].ID, b.cfg.WaitReplicas, err)
		} else {
			errs[i] = fmt.Errorf("%w: publish task %s: %d of %d replicas confirmed within %v", ErrNotReplicated, msgs[i].ID, got, b.cfg.WaitReplicas, timeout)
		}
	}
}
