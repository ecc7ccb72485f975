package celerycompat_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// pastDeadline is a context that is not done but whose deadline has passed: what Redis sees
// when it runs a publish late (it hung with the command in its socket), without the hang.
type pastDeadline struct {
	context.Context
	at time.Time
}

func (c pastDeadline) Deadline() (time.Time, bool) { return c.at, true }

// deadlineMsgs builds messages for every priority band, one for a queue not yet declared.
func deadlineMsgs(t *testing.T, p *cc.Producer) []*cc.Message {
	t.Helper()
	var msgs []*cc.Message
	for i, o := range [][]cc.SendOption{
		{cc.WithPriority(0)}, {cc.WithPriority(3)}, {cc.WithPriority(5)}, {cc.WithPriority(9)},
		{cc.WithQueue("other")}, {},
	} {
		m, err := p.Build("tasks.add", []any{i}, nil, o...)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// snapshot returns every key of db with its list or set contents.
func snapshot(t *testing.T, r *celerytest.Redis, db int) map[string][]string {
	t.Helper()
	keys, err := redis.Strings(r.Do(db, "KEYS", "*"), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, k := range keys {
		switch typ, _ := redis.String(r.Do(db, "TYPE", k), nil); typ {
		case "list":
			out[k], err = redis.Strings(r.Do(db, "LRANGE", k, 0, -1), nil)
		case "set":
			out[k], err = redis.Strings(r.Do(db, "SMEMBERS", k), nil)
		default:
			out[k] = []string{typ}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestPublishDeadlineOnServer: a publish whose deadline has passed by Redis's clock when Redis
// runs it pushes nothing (no list, no binding) and fails every message with ErrDeadlinePassed,
// which also matches context.DeadlineExceeded and ErrBroker; with the deadline ahead, the lists
// and bindings are byte for byte what the plain pipeline writes.
func TestPublishDeadlineOnServer(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	msgs := deadlineMsgs(t, s.producer)
	// This broker's clock is an hour behind Redis's: it sends a publish whose deadline passed a
	// second ago by Redis's clock, as it would reach a Redis that hung, and waits for the answer.
	late, err := cc.NewBroker(s.pool, cc.BrokerConfig{Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	warm, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := late.DeclareQueue(warm, "warm"); err != nil { // a connection in the pool to send on
		t.Fatal(err)
	}
	s.r.Do(0, "FLUSHDB")

	past := pastDeadline{context.Background(), time.Now().Add(-time.Second)}
	for i, err := range late.PublishBatch(past, msgs) {
		if !errors.Is(err, cc.ErrDeadlinePassed) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, cc.ErrBroker) {
			t.Errorf("message %d past its deadline: %v, want ErrDeadlinePassed", i, err)
		}
	}
	// By this side's clock too the deadline has passed: nothing is sent, the same error.
	for i, err := range s.broker.PublishBatch(past, msgs) {
		if !errors.Is(err, cc.ErrDeadlinePassed) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("message %d past its deadline by the broker's clock: %v, want ErrDeadlinePassed", i, err)
		}
	}
	if got := snapshot(t, s.r, 0); len(got) != 0 {
		t.Fatalf("a publish past its deadline wrote %q", got)
	}

	plain, err := cc.NewBroker(s.pool, cc.BrokerConfig{ClientSideDeadline: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range plain.PublishBatch(warm, msgs) {
		if err != nil {
			t.Fatalf("plain publish %d: %v", i, err)
		}
	}
	want := snapshot(t, s.r, 0)
	if len(want) < 6 { // four priority lists, a second queue, its bindings
		t.Fatalf("plain publish wrote only %q", want)
	}
	s.r.Do(0, "FLUSHDB")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, err := range s.broker.PublishBatch(ctx, msgs) {
		if err != nil {
			t.Fatalf("publish %d before its deadline: %v", i, err)
		}
	}
	got := snapshot(t, s.r, 0)
	if len(got) != len(want) {
		t.Fatalf("with a deadline: %q\nplain: %q", got, want)
	}
	for k, w := range want {
		g := got[k]
		if len(g) != len(w) {
			t.Errorf("%s: %d elements with a deadline, %d plain", k, len(g), len(w))
			continue
		}
		if k[0] != '_' { // a list: order matters
			for i := range w {
				if g[i] != w[i] {
					t.Errorf("%s[%d] differs:\n%s\n%s", k, i, g[i], w[i])
				}
			}
		}
	}
}

// TestPublishDeadlineErrorPerMessage: under the deadline script a push Redis refuses (the list
// key holds a string) fails that message only, as in the pipeline; ClientSideDeadline publishes
// as before.
func TestPublishDeadlineErrorPerMessage(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	msgs := deadlineMsgs(t, s.producer)
	s.r.Do(0, "SET", "other", "not a list")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errs := s.broker.PublishBatch(ctx, msgs)
	for i, err := range errs {
		if want := i == 4; (err != nil) != want || errors.Is(err, cc.ErrDeadlinePassed) {
			t.Errorf("message %d: %v, want an error: %v (not ErrDeadlinePassed)", i, err, want)
		}
	}

	s.r.Do(0, "FLUSHDB")
	off, err := cc.NewBroker(s.pool, cc.BrokerConfig{ClientSideDeadline: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range off.PublishBatch(ctx, msgs) {
		if err != nil {
			t.Errorf("ClientSideDeadline, message %d: %v", i, err)
		}
	}
	if n, _ := redis.Int(s.r.Do(0, "LLEN", "celery"), nil); n != 2 {
		t.Errorf("ClientSideDeadline: %d messages in celery, want 2", n)
	}
}

// TestPublishDeadlineLargeBatch: a batch of more values for one list than the script pushes per
// command (1000) lands in the order the plain pipeline gives.
func TestPublishDeadlineLargeBatch(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	msgs := make([]*cc.Message, 2500)
	for i := range msgs {
		m, err := s.producer.Build("tasks.add", []any{i}, nil)
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = m
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	plain, err := cc.NewBroker(s.pool, cc.BrokerConfig{ClientSideDeadline: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range plain.PublishBatch(ctx, msgs) {
		if err != nil {
			t.Fatalf("plain publish %d: %v", i, err)
		}
	}
	want := snapshot(t, s.r, 0)["celery"]
	s.r.Do(0, "FLUSHDB")
	for i, err := range s.broker.PublishBatch(ctx, msgs) {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	got := snapshot(t, s.r, 0)["celery"]
	if len(got) != len(msgs) || len(want) != len(msgs) {
		t.Fatalf("%d messages with a deadline, %d plain, want %d", len(got), len(want), len(msgs))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("celery[%d] differs from the plain pipeline's", i)
		}
	}
}

// TestPublishDeadlineHungRedis: a publish sent to a real redis-server that is paused (SIGSTOP)
// fails at its deadline, and when Redis resumes and runs it, it queues nothing. The plain
// pipeline waited for Redis to resume, then queued the message.
func TestPublishDeadlineHungRedis(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	msgs := deadlineMsgs(t, s.producer)[:1]
	warm, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.broker.DeclareQueue(warm, "celery"); err != nil { // a pooled connection, the binding
		t.Fatal(err)
	}
	pid := s.r.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.broker.PublishBatch(ctx, msgs)[0] }()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, cc.ErrBroker) {
			t.Errorf("publish to a hung Redis: %v, want a broker error", err)
		}
	case <-time.After(3 * time.Second):
		t.Error("publish to a hung Redis did not return at its deadline")
		resume()
		<-done
	}
	resume()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := s.pool.Get()
		_, err := c.Do("PING")
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis did not resume: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let Redis run what waited in its socket
	if n, _ := redis.Int(s.r.Do(0, "LLEN", "celery"), nil); n != 0 {
		t.Errorf("after the publish failed and Redis resumed, %d messages queued, want 0", n)
	}
}
