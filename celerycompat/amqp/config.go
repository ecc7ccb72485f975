package amqp

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// Config configures a Transport. The zero value, plus URL, talks to RabbitMQ as a default Celery
// app does. Field names follow Celery's settings where one exists.
type Config struct {
	// URL is the broker URL (Celery's broker_url): amqp://user:pass@host:port/vhost, or amqps://.
	// Celery's "amqp://guest@localhost//" names the vhost "/". Required.
	URL string
	// Codec encodes and decodes task bodies (content type, compression, peer version).
	Codec celerycompat.Codec
	// Queues declares queues whose shape is not Celery's default (Celery's task_queues). A queue
	// not listed is declared as Celery's task_create_missing_queues does: a direct exchange named
	// like the queue, bound with the queue name as routing key.
	Queues []Queue
	// QueueMaxPriority sets x-max-priority on every declared queue that does not set it (Celery's
	// task_queue_max_priority); 0 means none.
	QueueMaxPriority int
	// DeadLetterQueue is the durable queue DeadLetter puts messages in (default
	// "celerybridge.deadletter").
	DeadLetterQueue string
	// Heartbeat is the AMQP heartbeat (Celery's broker_heartbeat, default 120 s).
	Heartbeat time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between reconnection attempts
	// (defaults 100 ms and 5 s).
	ReconnectMin, ReconnectMax time.Duration
	// Lazy makes New return without connecting, and Consume keep retrying (with the reconnection
	// backoff) when the broker cannot be reached as it starts, instead of failing: what a Celery
	// app and worker do when RabbitMQ is down at startup (broker_connection_retry_on_startup).
	// Until the broker is reachable, PublishBatch and Ping answer errors wrapping
	// celerycompat.ErrBroker. A configuration the broker refuses (a queue declared with other
	// arguments, bad credentials) still fails Consume.
	Lazy bool
	// Logger receives connection diagnostics; nil is silent.
	Logger *slog.Logger
}

// Queue is one queue's declaration (kombu's Queue and Exchange).
type Queue struct {
	// Name is the queue name. Required.
	Name string
	// Exchange is the exchange the queue is bound to (default: Name, as Celery creates missing
	// queues); ExchangeType its type (default "direct").
	Exchange     string
	ExchangeType string
	// RoutingKey is the binding key (default: Name).
	RoutingKey string
	// Arguments are the queue arguments (kombu's queue_arguments), for example
	// {"x-queue-type": "quorum"} or {"x-max-priority": 10}; declared as given.
	Arguments map[string]any
}

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.URL == "" {
		return out, fmt.Errorf("%w: amqp: Config.URL is required", celerycompat.ErrInvalidConfig)
	}
	if out.DeadLetterQueue == "" {
		out.DeadLetterQueue = "celerybridge.deadletter"
	}
	if out.Heartbeat <= 0 {
		out.Heartbeat = 120 * time.Second
	}
	if out.ReconnectMin <= 0 {
		out.ReconnectMin = 100 * time.Millisecond
	}
	if out.ReconnectMax < out.ReconnectMin {
		out.ReconnectMax = max(5*time.Second, out.ReconnectMin)
	}
	if out.QueueMaxPriority < 0 || out.QueueMaxPriority > 255 {
		return out, fmt.Errorf("%w: amqp: QueueMaxPriority %d is outside 0..255", celerycompat.ErrInvalidConfig, out.QueueMaxPriority)
	}
	seen := map[string]bool{}
	for _, q := range out.Queues {
		if q.Name == "" || seen[q.Name] {
			return out, fmt.Errorf("%w: amqp: queue %q is unnamed or listed twice", celerycompat.ErrInvalidConfig, q.Name)
		}
		seen[q.Name] = true
	}
	return out, nil
}

// queue returns the declaration of the queue named name.
func (c *Config) queue(name string) Queue {
	q := Queue{Name: name}
	for _, cq := range c.Queues {
		if cq.Name == name {
			q = cq
			break
		}
	}
	if q.Exchange == "" {
		q.Exchange = name
	}
	if q.ExchangeType == "" {
		q.ExchangeType = "direct"
	}
	if q.RoutingKey == "" {
		q.RoutingKey = name
	}
	args := make(map[string]any, len(q.Arguments)+1)
	for k, v := range q.Arguments {
		args[k] = v
	}
	if _, ok := args["x-max-priority"]; !ok && c.QueueMaxPriority > 0 {
		args["x-max-priority"] = c.QueueMaxPriority
	}
	q.Arguments = args
	return q
}

// quorum reports whether q is declared as a quorum queue (no global QoS there).
func (q Queue) quorum() bool {
	t, _ := q.Arguments["x-queue-type"].(string)
	return t == "quorum"
}
