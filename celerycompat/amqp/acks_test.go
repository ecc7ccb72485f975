package amqp

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// brokerModel is a channel as RabbitMQ keeps it: the outstanding delivery tags. It fails the test
// on a frame RabbitMQ would refuse (an unknown tag closes the channel) and on one that would
// settle a message the worker has not finished.
type brokerModel struct {
	t        *testing.T
	mu       sync.Mutex
	out      map[uint64]bool // outstanding tag -> finished by the worker (its Ack was called)
	frames   int
	multiple int
}

func newBrokerModel(t *testing.T, n int) *brokerModel {
	m := &brokerModel{t: t, out: map[uint64]bool{}}
	for tag := uint64(1); tag <= uint64(n); tag++ {
		m.out[tag] = false
	}
	return m
}

func (m *brokerModel) finished(tag uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.out[tag]; ok {
		m.out[tag] = true
	}
}

// Ack applies a basic.ack frame.
func (m *brokerModel) Ack(tag uint64, multiple bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frames++
	if _, ok := m.out[tag]; !ok {
		m.t.Errorf("basic.ack of tag %d, which is not outstanding: RabbitMQ closes the channel (PRECONDITION_FAILED)", tag)
		return nil
	}
	if !multiple {
		if !m.out[tag] {
			m.t.Errorf("basic.ack of tag %d before its task finished", tag)
		}
		delete(m.out, tag)
		return nil
	}
	m.multiple++
	for t, done := range m.out {
		if t <= tag {
			if !done {
				m.t.Errorf("basic.ack multiple up to %d settles tag %d, whose task has not finished", tag, t)
			}
			delete(m.out, t)
		}
	}
	return nil
}

// reject applies a basic.reject frame.
func (m *brokerModel) reject(tag uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.out[tag]; !ok {
		m.t.Errorf("basic.reject of tag %d, which is not outstanding", tag)
	}
	delete(m.out, tag)
	return nil
}

func (m *brokerModel) outstanding() map[uint64]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := map[uint64]bool{}
	for k, v := range m.out {
		c[k] = v
	}
	return c
}

// testAcker is an acker on channel m as generation 1, logging to t.
func testAcker(t *testing.T, batch int, m acknowledger) *acker {
	a := newAcker(batch, slog.New(slog.NewTextHandler(t.Output(), nil)))
	a.reset(1, m)
	return a
}

// TestAckerInOrder: acks in delivery order go out as one multiple ack per batch.
func TestAckerInOrder(t *testing.T) {
	m := newBrokerModel(t, 160)
	a := testAcker(t, 16, m)
	for tag := uint64(1); tag <= 160; tag++ {
		m.finished(tag)
		if err := a.ack(1, tag); err != nil {
			t.Fatalf("ack %d: %v", tag, err)
		}
	}
	if len(m.outstanding()) != 0 || m.frames != 10 || m.multiple != 10 {
		t.Fatalf("outstanding %d, frames %d (multiple %d); want 0, 10, 10", len(m.outstanding()), m.frames, m.multiple)
	}
}

// TestAckerModel: in random completion orders, with rejects and tags held to the end (ETA tasks,
// a long task), no frame settles a tag whose task is unfinished or that is not outstanding, the
// timer alone sends every ack within a few milliseconds, and Close sends the rest.
func TestAckerModel(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			n := 50 + r.IntN(300)
			m := newBrokerModel(t, n)
			a := testAcker(t, 1+r.IntN(32), m)
			defer a.close()
			order := r.Perm(n)
			held := map[uint64]bool{}
			for _, i := range order {
				tag := uint64(i + 1)
				switch x := r.IntN(20); {
				case x == 0:
					held[tag] = true
				case x == 1:
					if err := a.settle(1, tag, func() error { return m.reject(tag) }); err != nil {
						t.Fatalf("reject %d: %v", tag, err)
					}
				default:
					m.finished(tag)
					if err := a.ack(1, tag); err != nil {
						t.Fatalf("ack %d: %v", tag, err)
					}
				}
				if r.IntN(8) == 0 {
					time.Sleep(time.Duration(r.IntN(300)) * time.Microsecond)
				}
			}
			// Only the held tags stay outstanding once the timer has run its course.
			deadline := time.Now().Add(5 * time.Second)
			for len(m.outstanding()) != len(held) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			for tag := range m.outstanding() {
				if !held[tag] {
					t.Fatalf("tag %d is still outstanding after its ack and 5 s", tag)
				}
			}
			for tag := range held {
				m.finished(tag)
				if err := a.ack(1, tag); err != nil {
					t.Fatalf("ack %d: %v", tag, err)
				}
			}
			a.close()
			if out := m.outstanding(); len(out) != 0 {
				t.Fatalf("outstanding after close: %v", out)
			}
		})
	}
}

// TestAckerNewChannel: after a reconnect the old channel's pending acks are dropped (that channel
// is gone; the broker redelivers) and an ack for it reports the delivery stale.
func TestAckerNewChannel(t *testing.T) {
	old, fresh := newBrokerModel(t, 4), newBrokerModel(t, 4)
	a := testAcker(t, 8, old)
	defer a.close()
	old.finished(1)
	if err := a.ack(1, 1); err != nil {
		t.Fatalf("ack on the live channel: %v", err)
	}
	a.reset(2, fresh)
	fresh.finished(1)
	if err := a.ack(2, 1); err != nil {
		t.Fatalf("ack on the new channel: %v", err)
	}
	if err := a.ack(1, 2); !errors.Is(err, ErrStaleDelivery) {
		t.Fatalf("ack on the replaced channel = %v, want ErrStaleDelivery", err)
	}
	a.close()
	if old.frames != 0 || len(fresh.outstanding()) != 3 {
		t.Fatalf("old channel frames %d (want 0), new channel outstanding %d (want 3)", old.frames, len(fresh.outstanding()))
	}
}

// brokenChannel fails every frame as a connection whose socket broke does (not amqp091.ErrClosed).
type brokenChannel struct{ frames int }

func (b *brokenChannel) Ack(uint64, bool) error {
	b.frames++
	return errors.New("write tcp: broken pipe")
}

// TestAckerUnwritableFrame: a settlement whose frame cannot be written is ErrStaleDelivery, never
// the retryable celerycompat.ErrBroker (the delivery has left the held set, so a retry could only
// fail again, forever), and a timer flush that fails is logged, since its Acks have returned.
func TestAckerUnwritableFrame(t *testing.T) {
	var logged strings.Builder
	var mu sync.Mutex
	b := &brokenChannel{}
	a := newAcker(1, slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil)))
	a.reset(1, b)
	err := a.ack(1, 1)
	if !errors.Is(err, ErrStaleDelivery) || errors.Is(err, celerycompat.ErrBroker) {
		t.Fatalf("ack with a broken channel = %v, want ErrStaleDelivery and not ErrBroker", err)
	}
	err = a.settle(1, 2, func() error { return errors.New("write tcp: broken pipe") })
	if !errors.Is(err, ErrStaleDelivery) || errors.Is(err, celerycompat.ErrBroker) {
		t.Fatalf("reject with a broken channel = %v, want ErrStaleDelivery and not ErrBroker", err)
	}
	coalescing := newAcker(16, slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil)))
	coalescing.reset(1, b)
	if err := coalescing.ack(1, 1); err != nil { // deferred: the frame goes out with the timer
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		text := logged.String()
		mu.Unlock()
		if strings.Contains(text, "coalesced basic.ack not sent") && strings.Contains(text, "broken pipe") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the timer's failed flush was not logged; log: %q", text)
		}
		time.Sleep(time.Millisecond)
	}
	coalescing.close()
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestCoalescedAcksSpareHeldMessage: on RabbitMQ, with one message held un-acked (an ETA task)
// below 63 acked ones, the coalesced acks settle the 63 while the consumer runs (the timer
// sends them, not Close) and never the held one, which the broker hands back when the consumer
// closes.
func TestCoalescedAcksSpareHeldMessage(t *testing.T) {
	tr, v := newTransport(t, Config{})
	var msgs []*celerycompat.Message
	for i := range 64 {
		msgs = append(msgs, taskMsg("celery", i))
	}
	publish(t, tr, msgs...)
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 128})
	var got []*celerycompat.Delivery
	for len(got) < 64 {
		got = append(got, next(t, c, 64-len(got), 10*time.Second)...)
	}
	heldID := got[0].Message.ID
	rest := got[1:]
	rand.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
	for _, d := range rest {
		if err := c.Ack(testCtx(t), d); err != nil {
			t.Fatal(err)
		}
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs["celery"].Ready == 0 && qs["celery"].Unacked == 1 })
	if err := c.Close(testCtx(t)); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
	again := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 128})
	back := next(t, again, 1, 10*time.Second)
	if len(back) != 1 || back[0].Message.ID != heldID || !back[0].Message.Redelivered {
		t.Fatalf("redelivered %d messages; want only the held one (%s), flagged redelivered", len(back), heldID)
	}
	if err := again.Ack(testCtx(t), back[0]); err != nil {
		t.Fatal(err)
	}
	nothing(t, again, 300*time.Millisecond)
}

// TestSpans: the interval set holds exactly the tags added, as sorted, disjoint, non-adjacent
// spans.
func TestSpans(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		var s spans
		want := map[uint64]bool{}
		for range r.IntN(200) {
			tag := uint64(1 + r.IntN(120))
			s.add(tag)
			want[tag] = true
		}
		got := map[uint64]bool{}
		for i, sp := range s {
			if sp.lo > sp.hi || (i > 0 && s[i-1].hi+1 >= sp.lo) {
				t.Fatalf("spans not sorted, disjoint and apart: %v", s)
			}
			for tag := sp.lo; tag <= sp.hi; tag++ {
				got[tag] = true
			}
		}
		if len(got) != len(want) {
			t.Fatalf("spans %v hold %d tags, want %d", s, len(got), len(want))
		}
		for tag := range want {
			if !got[tag] {
				t.Fatalf("spans %v lack %d", s, tag)
			}
		}
	}
}

// TestAckerBoundedWhileHeld: with the first tag held (an ETA task due much later), acking 50,000
// others leaves the acker a span or two and no pending set, not a record per message; once the
// held one is acked, every tag is settled.
func TestAckerBoundedWhileHeld(t *testing.T) {
	const n = 50000
	m := newBrokerModel(t, n)
	a := testAcker(t, 16, m)
	defer a.close()
	for tag := uint64(2); tag <= n; tag++ {
		m.finished(tag)
		if err := a.ack(1, tag); err != nil {
			t.Fatalf("ack %d: %v", tag, err)
		}
		if tag%1000 == 0 {
			for range looseTicks {
				a.timed()
			}
		}
	}
	for range looseTicks {
		a.timed()
	}
	a.mu.Lock()
	kept, pending := len(a.settled), len(a.pend)
	a.mu.Unlock()
	if kept > 2 || pending != 0 {
		t.Fatalf("acker keeps %d spans and %d pending tags while tag 1 is held; want at most 2 and 0", kept, pending)
	}
	if out := m.outstanding(); len(out) != 1 {
		t.Fatalf("%d tags outstanding while only tag 1 is held", len(out))
	}
	m.finished(1)
	if err := a.ack(1, 1); err != nil {
		t.Fatalf("ack 1: %v", err)
	}
	a.close()
	if out := m.outstanding(); len(out) != 0 {
		t.Fatalf("outstanding after close: %d", len(out))
	}
}
