package amqp

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

func TestRoundTrip(t *testing.T) {
	tr, v := newTransport(t, Config{})
	ctx := testCtx(t)
	msgs := []*celerycompat.Message{taskMsg("celery", 1, 2), taskMsg("celery", 3, 4), taskMsg("other", 5, 6)}
	eta := time.Date(2030, 1, 2, 3, 4, 5, 600000, time.UTC)
	msgs[1].ETA, msgs[1].ReplyTo, msgs[1].Priority = &eta, "reply-q", 3
	publish(t, tr, msgs...)

	qs := v.Queues(t)
	if qs["celery"].Ready != 2 || qs["other"].Ready != 1 {
		t.Fatalf("queues after publish: %+v", qs)
	}
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery", "other"}, Prefetch: 10})
	got := map[string]*celerycompat.Delivery{}
	for _, d := range next(t, c, 3, 10*time.Second) {
		if d.DecodeErr != nil {
			t.Fatalf("DecodeErr: %v", d.DecodeErr)
		}
		got[d.Message.ID] = d
	}
	for _, m := range msgs {
		d := got[m.ID]
		if d == nil {
			t.Fatalf("message %s not delivered", m.ID)
		}
		if d.Queue != m.DeliveryInfo.RoutingKey || d.Message.Redelivered {
			t.Errorf("%s: queue %q redelivered %v", m.ID, d.Queue, d.Message.Redelivered)
		}
		want := []any{m.Args, m.ReplyTo, m.Priority, m.ID, 2, m.Task}
		gotv := []any{d.Message.Args, d.Message.ReplyTo, d.Message.Priority, d.Message.CorrelationID, d.Message.DeliveryMode, d.Message.Task}
		if diff := cmp.Diff(jsonish(want), jsonish(gotv)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", m.ID, diff)
		}
		if (m.ETA == nil) != (d.Message.ETA == nil) || (m.ETA != nil && !m.ETA.Equal(*d.Message.ETA)) {
			t.Errorf("%s: eta %v, want %v", m.ID, d.Message.ETA, m.ETA)
		}
		if err := c.Ack(ctx, d); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		if err := c.Ack(ctx, d); err == nil {
			t.Errorf("second Ack of %s succeeded", d.Tag)
		}
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool {
		return qs["celery"].Ready+qs["celery"].Unacked+qs["other"].Ready+qs["other"].Unacked == 0
	})
}
