package celerycompat

import (
	"context"
	"log/slog"
	"time"
)

// Transport is the seam between celerycompat and the broker that carries task messages: the
// Producer publishes through it and the Worker consumes through it, knowing nothing of the broker
// behind it. *Broker (Redis, kombu's Redis transport) is the first implementation; package
// celerycompat/amqp (RabbitMQ, kombu's py-amqp transport) is the second.
//
// A Transport owns the broker's part of Celery's delivery guarantee: a message handed to a worker
// stays the broker's until the worker acknowledges it, so a worker that dies before its Ack loses
// nothing (the message is delivered again, to it or another worker, Python or Go).
//
// Remote control and events go through the optional FanoutTransport (both transports have it);
// the result backend does not go through a Transport: Backend needs Redis.
type Transport interface {
	// PublishBatch sends msgs, each through its DeliveryInfo's exchange and routing key, and
	// returns one error per message (nil for those sent); the slice is never shorter than msgs. A
	// message whose error is nil is held by the broker (at least once: a retried publish may send
	// it twice). On Redis a deadline on ctx is also checked by Redis itself, so a publish that
	// fails with ErrDeadlinePassed was not queued (see Broker.PublishBatch).
	PublishBatch(ctx context.Context, msgs []*Message) []error
	// Consume starts taking messages for a worker. The Consumer is the worker's alone.
	Consume(ctx context.Context, cfg ConsumerConfig) (Consumer, error)
	// Codec is what the transport encodes bodies and arguments with.
	Codec() Codec
}

// ConsumerConfig configures a Consumer. Fields marked Redis are read by the Redis transport only.
type ConsumerConfig struct {
	// Queues are consumed in kombu's order: round robin across queues, priority first.
	Queues []string
	// Prefetch is how many messages the worker holds un-acknowledged at most, besides those
	// counted by Consumer.Hold (Celery: concurrency × worker_prefetch_multiplier).
	Prefetch int
	// Hostname is the worker's node name (consumer tags, diagnostics).
	Hostname string
	// Logger receives diagnostics; nil is silent.
	Logger *slog.Logger

	// PollOnly (Redis) polls instead of waiting on the lists with BLMOVE.
	PollOnly bool
	// IdleWait (Redis) is how long one idle wait lasts before it is renewed (default 2 s).
	IdleWait time.Duration
	// PollInterval (Redis) is the longest pause between polls when polling (default 50 ms).
	PollInterval time.Duration
	// RefreshInterval (Redis) is how often held messages' un-acked scores are renewed
	// (default a quarter of the visibility timeout, at most 60 s).
	RefreshInterval time.Duration
	// RestoreInterval (Redis) is how often the visibility-timeout sweep runs (default 10 s).
	RestoreInterval time.Duration
}

// Consumer hands one worker the messages of its queues and settles each one. Every Delivery that
// Next returns must be settled exactly once, by Ack, Requeue or DeadLetter; until then the broker
// holds it for this worker and gives it to another only if this one is gone. A Consumer is safe
// for concurrent use, except that only one Next runs at a time.
type Consumer interface {
	// Next returns up to max deliveries. It blocks until a message arrives, ctx ends (returning
	// ctx's error), the broker fails, or a wait of the transport's own length (about a second or
	// two) lapses with nothing to deliver (returning none and no error: the worker then re-checks
	// its window and calls again). Whatever deliveries it returns are held and must be settled,
	// even alongside an error.
	Next(ctx context.Context, max int) ([]*Delivery, error)
	// Ack settles d as done (kombu's basic_ack): the broker forgets it.
	Ack(ctx context.Context, d *Delivery) error
	// Requeue gives d back to its queue (kombu's basic_reject with requeue): at the back of the
	// line when back is true, else at the front where the broker can do that.
	Requeue(ctx context.Context, d *Delivery, back bool) error
	// DeadLetter settles d by keeping it, with reason, where the transport keeps messages no
	// worker can run (Broker.DeadLetters on Redis). The message is never silently dropped.
	DeadLetter(ctx context.Context, d *Delivery, reason string) error
	// SetQueues replaces the queues consumed (Celery's add_consumer and cancel_consumer). It
	// returns once Next can no longer return a message that arrives later on a removed queue;
	// messages already taken from it are still returned and must be settled.
	SetQueues(ctx context.Context, queues []string) error
	// Hold changes by n the number of messages the worker holds outside its prefetch window (ETA
	// and countdown tasks waiting for their time): Celery raises the prefetch count for each
	// (qos.increment_eventually) and lowers it when the task runs or is settled. Hold must not
	// block: a transport applies the change when it next can, as Celery's "eventually" does.
	Hold(n int)
	// Close stops consuming. Deliveries not yet settled stay the broker's, which delivers them
	// again (on Redis after the visibility timeout, or at once when the worker requeued them).
	Close(ctx context.Context) error
}
