package celerycompat_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

func TestParseSentinelURL(t *testing.T) {
	tests := []struct {
		raw  string
		want cc.RedisURL
		err  bool
	}{
		// kombu's Connection keeps the first entry as its own URL: db and credentials come from it.
		{raw: "sentinel://h1:26380;sentinel://h2:26381/3",
			want: cc.RedisURL{Network: "tcp", Sentinels: []string{"h1:26380", "h2:26381"}}},
		{raw: "sentinel://:pw@h1/2;sentinel://h2",
			want: cc.RedisURL{Network: "tcp", DB: 2, Password: "pw", Sentinels: []string{"h1:26379", "h2:26379"}}},
		{raw: "sentinel://u:pw@10.0.0.1:1/0?db=5",
			want: cc.RedisURL{Network: "tcp", DB: 5, Username: "u", Password: "pw", Sentinels: []string{"10.0.0.1:1"}}},
		{raw: "sentinel://h1;redis://h2", err: true},
		{raw: "sentinel://h1/x", err: true},
		{raw: "sentinel://h1/-1", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := cc.ParseRedisURL(tt.raw)
			if tt.err {
				if !errors.Is(err, cc.ErrInvalidURL) {
					t.Fatalf("err = %v, want ErrInvalidURL", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, *got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestSentinelPoolWithoutMasterName(t *testing.T) {
	u, err := cc.ParseRedisURL("sentinel://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	p := u.NewPool(1)
	defer p.Close()
	if _, err := p.GetContext(context.Background()); !errors.Is(err, cc.ErrInvalidURL) {
		t.Fatalf("GetContext err = %v, want ErrInvalidURL", err)
	}
}

func TestSentinelPoolNoSentinelAnswers(t *testing.T) {
	u, err := cc.ParseRedisURL("sentinel://127.0.0.1:" + strconv.Itoa(celerytest.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	u.MasterName = "mymaster"
	p := u.NewPool(1)
	defer p.Close()
	if _, err := p.GetContext(context.Background()); !errors.Is(err, cc.ErrNoMaster) {
		t.Fatalf("GetContext err = %v, want ErrNoMaster", err)
	}
}

func sentinelPool(t *testing.T, s *celerytest.Sentinels, db, size int) *redis.Pool {
	t.Helper()
	u, err := cc.ParseRedisURL(s.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	u.MasterName = celerytest.SentinelMaster
	p := u.NewPool(size)
	t.Cleanup(func() { p.Close() })
	return p
}

func do(ctx context.Context, p *redis.Pool, cmd string, args ...any) (any, error) {
	c, err := p.GetContext(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return redis.DoContext(c, ctx, cmd, args...)
}

// After a failover the first command that fails on a connection to the old master marks every
// idle connection to it stale: the next borrow dials the new master at once, instead of handing
// out dead connections one failed command at a time.
func TestSentinelPoolFollowsFailover(t *testing.T) {
	s := celerytest.StartSentinels(t)
	ctx := context.Background()
	p := sentinelPool(t, s, 2, 8)
	// Fill the pool with idle connections to the master.
	var held []redis.Conn
	for range 4 {
		c, err := p.GetContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Do("SET", "k", "v"); err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	for _, c := range held[1:] {
		c.Close()
	}
	if _, err := redis.Int(held[0].Do("WAIT", 1, 1000)); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	s.Master.Kill()
	t.Logf("sentinels promoted the replica %v after the kill", s.WaitFailover(killed, 30*time.Second))
	if _, err := held[0].Do("GET", "k"); err == nil {
		t.Fatal("a connection to the killed master still answers")
	}
	held[0].Close()
	for i := range 3 { // each borrow must reach the new master: no stale idle connection left
		v, err := redis.String(do(ctx, p, "GET", "k"))
		if err != nil || v != "v" {
			t.Fatalf("borrow %d after failover: %q, %v", i, v, err)
		}
	}
}

// A master demoted while the client still holds a connection answers writes with READONLY; the
// connection must leave the pool.
func TestSentinelPoolDropsReadonly(t *testing.T) {
	s := celerytest.StartSentinels(t)
	ctx := context.Background()
	p := sentinelPool(t, s, 0, 2)
	c, err := p.GetContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := nodeDo(t, s.Master.Addr(), 0, "REPLICAOF", "127.0.0.1", s.Replica.Port); err != nil {
		t.Fatal(err)
	}
	_, err = c.Do("SET", "k", "v")
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		t.Fatalf("SET on a demoted master: %v, want READONLY", err)
	}
	if c.Err() == nil {
		t.Fatal("after READONLY the connection still reports no error: the pool would keep it")
	}
}

func nodeDo(t *testing.T, addr string, db int, cmd string, args ...any) (any, error) {
	t.Helper()
	c, err := redis.Dial("tcp", addr, redis.DialDatabase(db), redis.DialConnectTimeout(time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// FuzzParseRedisURL: any string parses to a URL or fails with ErrInvalidURL, never panics; a
// sentinel URL that parses names at least one sentinel and a non-negative database.
func FuzzParseRedisURL(f *testing.F) {
	for _, s := range []string{"redis://h:1/2", "rediss://h?ssl_cert_reqs=none", "unix:///s?db=3",
		"sentinel://h1:26380;sentinel://h2:26381/3", "sentinel://:pw@h1/2;sentinel://h2", "sentinel://;;",
		"sentinel://h1/x", "sentinel://[::1]:1/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := cc.ParseRedisURL(raw)
		if err != nil {
			if !errors.Is(err, cc.ErrInvalidURL) {
				t.Fatalf("%q: error %v is not ErrInvalidURL", raw, err)
			}
			return
		}
		if u.DB < 0 {
			t.Fatalf("%q: negative database %d", raw, u.DB)
		}
		if strings.HasPrefix(raw, "sentinel://") && len(u.Sentinels) == 0 {
			t.Fatalf("%q: sentinel URL parsed without a sentinel", raw)
		}
	})
}

// A publish no replica confirms fails with ErrNotReplicated, although the master has the message.
func TestWaitReplicasNotConfirmed(t *testing.T) {
	r := celerytest.StartRedis(t) // no replica at all
	b, err := cc.NewBroker(r.Pool(0), cc.BrokerConfig{WaitReplicas: 1, WaitTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p, err := cc.NewProducer(b, cc.ProducerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Send(context.Background(), "t.noop", nil, nil)
	if !errors.Is(err, cc.ErrNotReplicated) {
		t.Fatalf("Send without a replica: %v, want ErrNotReplicated", err)
	}
	if n, _ := redis.Int(r.Do(0, "LLEN", "celery"), nil); n != 1 {
		t.Fatalf("queue holds %d messages, want the 1 the master accepted", n)
	}
}
