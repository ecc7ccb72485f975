package amqp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestConnectionLostRedelivers: the broker closes the connection while two deliveries are held
// un-acked; the consumer reconnects, the broker delivers both again with redelivered=true, and
// settling the old deliveries says they are stale.
func TestConnectionLostRedelivers(t *testing.T) {
	tr, v := newTransport(t, Config{ReconnectMin: 50 * time.Millisecond})
	ctx := testCtx(t)
	m1, m2 := taskMsg("celery", 1), taskMsg("celery", 2)
	publish(t, tr, m1, m2)
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 10})
	old := next(t, c, 2, 10*time.Second)
	for _, d := range old {
		if d.Message.Redelivered {
			t.Fatalf("first delivery of %s marked redelivered", d.Message.ID)
		}
	}
	v.Ctl(t, "close_all_connections", "test: connection lost")
	again := next(t, c, 2, 30*time.Second)
	ids := map[string]bool{m1.ID: true, m2.ID: true}
	for _, d := range again {
		if !ids[d.Message.ID] || !d.Message.Redelivered || !d.Message.DeliveryInfo.Redelivered {
			t.Errorf("after the reconnect: %s redelivered=%v", d.Message.ID, d.Message.Redelivered)
		}
		delete(ids, d.Message.ID)
		for _, o := range old {
			if o.Tag == d.Tag {
				t.Errorf("tag %s reused across channels", d.Tag)
			}
		}
	}
	for _, d := range old {
		if err := c.Ack(ctx, d); !errors.Is(err, ErrStaleDelivery) {
			t.Errorf("Ack of a delivery of the lost channel: %v, want ErrStaleDelivery", err)
		}
	}
	for _, d := range again {
		if err := c.Ack(ctx, d); err != nil {
			t.Fatalf("Ack after reconnect: %v", err)
		}
	}
	publish(t, tr, taskMsg("celery", 3)) // the publisher reconnects too
	d := next(t, c, 1, 10*time.Second)[0]
	if err := c.Ack(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs["celery"].Ready+qs["celery"].Unacked == 0 })
}

// childEnv runs the test binary as a consumer that takes messages and never settles them.
const childEnv = "CELERYBRIDGE_AMQP_CHILD_URL"

func init() {
	if url := os.Getenv(childEnv); url != "" {
		os.Exit(runChild(url))
	}
}

func runChild(url string) int {
	ctx := context.Background()
	tr, err := Dial(ctx, url)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	c, err := tr.Consume(ctx, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 10})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	n := 0
	for n < 2 {
		ds, err := c.Next(ctx, 2-n)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		n += len(ds)
	}
	fmt.Println("held")
	select {} // until SIGKILL
}

// TestKilledConsumerRedelivers: a process SIGKILLed while holding two un-acked messages loses
// nothing: the broker delivers both again, marked redelivered.
func TestKilledConsumerRedelivers(t *testing.T) {
	tr, v := newTransport(t, Config{})
	m1, m2 := taskMsg("celery", 1), taskMsg("celery", 2)
	publish(t, tr, m1, m2)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+v.URL())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "held" {
		t.Fatalf("child: %q", line)
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool { return qs["celery"].Unacked == 2 })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 10})
	ids := map[string]bool{m1.ID: true, m2.ID: true}
	for _, d := range next(t, c, 2, 30*time.Second) {
		if !ids[d.Message.ID] || !d.Message.Redelivered {
			t.Errorf("%s redelivered=%v", d.Message.ID, d.Message.Redelivered)
		}
		if err := c.Ack(testCtx(t), d); err != nil {
			t.Fatal(err)
		}
	}
}

// rawPublish publishes p to queue q (declared as Celery does) bypassing the codec.
func rawPublish(t *testing.T, v *celerytest.VHost, q string, p amqp091.Publishing) {
	t.Helper()
	ch := v.Channel(t)
	if err := declare(ch, (&Config{}).queue(q)); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", q, false, false, p); err != nil {
		t.Fatal(err)
	}
}

// getOne basic.gets one message from q.
func getOne(t *testing.T, v *celerytest.VHost, q string) amqp091.Delivery {
	t.Helper()
	ch := v.Channel(t)
	d, ok, err := ch.Get(q, true)
	if err != nil || !ok {
		t.Fatalf("basic.get %s: ok=%v err=%v", q, ok, err)
	}
	return d
}

// TestPoisonDeadLettered: bodies the codec refuses come out of Next with DecodeErr, and
// DeadLetter keeps each, unchanged and with its reason, in the dead-letter queue.
func TestPoisonDeadLettered(t *testing.T) {
	tr, v := newTransport(t, Config{})
	ctx := testCtx(t)
	hdr := func(id string) amqp091.Table { return amqp091.Table{"task": "cap.add", "id": id, "lang": "py"} }
	poison := map[string]amqp091.Publishing{
		"bad-json": {ContentType: "application/json", Headers: hdr("bad-json"), Body: []byte("[1, 2")},
		"pickle":   {ContentType: "application/x-python-serialize", Headers: hdr("pickle"), Body: []byte("\x80\x04K\x01.")},
		"unknown":  {ContentType: "text/x-whatever", Headers: hdr("unknown"), Body: []byte("hi")},
		"no-id":    {ContentType: "application/json", Headers: amqp091.Table{"task": "cap.add"}, Body: []byte("[[], {}, {}]")},
	}
	for name, p := range poison {
		p.CorrelationId = name
		rawPublish(t, v, "celery", p)
	}
	c := consume(t, tr, celerycompat.ConsumerConfig{Queues: []string{"celery"}, Prefetch: 10})
	for _, d := range next(t, c, len(poison), 10*time.Second) {
		if d.DecodeErr == nil || d.Message != nil {
			t.Fatalf("poison delivered as %+v (err %v)", d.Message, d.DecodeErr)
		}
		if err := c.DeadLetter(ctx, d, "poison: "+d.DecodeErr.Error()); err != nil {
			t.Fatalf("DeadLetter: %v", err)
		}
	}
	waitQueues(t, v, func(qs map[string]celerytest.Queue) bool {
		return qs["celerybridge.deadletter"].Ready == len(poison) && qs["celery"].Ready+qs["celery"].Unacked == 0
	})
	for range poison {
		d := getOne(t, v, tr.DeadLetterQueue())
		want, ok := poison[d.CorrelationId]
		if !ok || string(d.Body) != string(want.Body) || d.ContentType != want.ContentType || d.DeliveryMode != 2 {
			t.Errorf("dead letter %q: body %q content type %q", d.CorrelationId, d.Body, d.ContentType)
		}
		reason, _ := d.Headers["x-deadletter-reason"].(string)
		if !strings.HasPrefix(reason, "poison: ") || d.Headers["x-deadletter-queue"] != "celery" || d.Headers["task"] != "cap.add" {
			t.Errorf("dead letter %q headers %v", d.CorrelationId, d.Headers)
		}
	}
}
