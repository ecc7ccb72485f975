package celerycompat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"
	"github.com/google/uuid"
)

// Delivery is one message taken from a queue and recorded as un-acked (kombu's unacked hash and
// unacked_index), so that any worker's restore sweep, Python or Go, puts it back if it is never
// acknowledged.
type Delivery struct {
	Raw   []byte // the envelope exactly as it was in the list
	List  string // the list it was popped from (with prefix and priority suffix)
	Queue string // the queue name
	Tag   string // properties.delivery_tag
	// Message is the decoded message; nil when DecodeErr is set.
	Message   *Message
	DecodeErr error
	// Poisoned is set when the envelope was unreadable even to the fetch script (not JSON, or
	// without the properties a kombu consumer needs). It is already in the dead-letter list with
	// Reason and is not held: nothing is left to ack.
	Poisoned bool
	Reason   string
}

// fetchLists returns the lists to pop from for queues, band-major: for each priority step, one
// list per queue.
func (b *Broker) fetchLists(queues []string) []string {
	lists := make([]string, 0, len(queues)*len(rdb.PrioritySteps))
	for _, s := range rdb.PrioritySteps {
		for _, q := range queues {
			lists = append(lists, b.keys.Queue(q, s))
		}
	}
	return lists
}

// Fetch atomically takes up to max waiting messages from queues and records each as un-acked.
// Messages come in kombu's order: priority-major (0 first), and within a priority the queues
// round-robin starting with queues[0] (the queue that delivers moves to the end). It returns no
// deliveries when every queue is empty. A message that cannot be decoded is returned with
// DecodeErr set (still held: dead-letter or ack it); one the fetch script could not even read is
// returned Poisoned, already dead-lettered.
func (b *Broker) Fetch(ctx context.Context, queues []string, max int) ([]*Delivery, error) {
	if len(queues) == 0 || max < 1 {
		return nil, fmt.Errorf("%w: fetch needs a queue and max >= 1", ErrInvalidConfig)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return b.fetchOn(ctx, c, queues, max)
}

// fetchOn is Fetch on connection c.
func (b *Broker) fetchOn(ctx context.Context, c redis.Conn, queues []string, max int) ([]*Delivery, error) {
	lists := b.fetchLists(queues)
	fetched, err := rdb.Fetch(ctx, c, b.keys, lists, len(queues), max, b.now())
	if err != nil && len(fetched) == 0 {
		return nil, fmt.Errorf("%w: fetch: %w", ErrBroker, err)
	}
	out := make([]*Delivery, 0, len(fetched))
	for _, f := range fetched {
		d := &Delivery{Raw: f.Raw, Queue: queues[f.Queue], Tag: f.Tag}
		if f.Reason != "" {
			d.List = b.keys.Queue(queues[f.Queue], 0)
			d.Poisoned, d.Reason = true, f.Reason
			d.DecodeErr = &DecodeError{Field: "envelope", Err: errors.New(f.Reason)}
			out = append(out, d)
			continue
		}
		d.Message, d.DecodeErr = b.codec.Decode(f.Raw)
		d.List = b.keys.Queue(queues[f.Queue], 0)
		if d.Message != nil {
			d.List = b.keys.Queue(queues[f.Queue], priorityStep(d.Message.Priority))
		}
		out = append(out, d)
	}
	if err != nil {
		return out, fmt.Errorf("%w: fetch: %w", ErrBroker, err)
	}
	return out, nil
}

func unixScore(t time.Time) string { return rdb.Score(t) }

// Ack removes a delivered message from the un-acked set (kombu's basic_ack). It returns once
// the message is no longer held. Acks made at the same time by several goroutines share one
// MULTI (see ackGroup), so a busy worker spends one round trip on many acknowledgements.
func (b *Broker) Ack(ctx context.Context, tag string) error {
	return b.acks.ack(ctx, b, tag)
}

// ackTags removes tags from the un-acked set in one MULTI.
func (b *Broker) ackTags(ctx context.Context, tags []string) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := rdb.Ack(c, b.keys, tags); err != nil {
		if len(tags) == 1 {
			return fmt.Errorf("%w: ack %s: %w", ErrBroker, tags[0], err)
		}
		return fmt.Errorf("%w: ack %d messages: %w", ErrBroker, len(tags), err)
	}
	return nil
}

// DeadLetter is one element of the dead-letter list.
type DeadLetter struct {
	Reason string    `json:"reason"`
	Queue  string    `json:"queue"`
	Time   string    `json:"time"`
	Tag    string    `json:"tag"`
	TaskID string    `json:"task_id,omitempty"`
	Task   string    `json:"task,omitempty"`
	Raw    []byte    `json:"-"` // the original envelope bytes
	At     time.Time `json:"-"` // Time parsed
}

func encodeDeadLetter(dl DeadLetter, raw []byte) []byte {
	meta, _ := json.Marshal(dl) // plain strings only: cannot fail
	out := make([]byte, 0, len(meta)+1+len(raw))
	out = append(append(append(out, meta...), '\n'), raw...)
	return out
}

// DeadLetterDelivery moves a held delivery to the dead-letter list with reason, atomically
// removing it from the un-acked set. It reports false when the message was no longer held.
func (b *Broker) DeadLetterDelivery(ctx context.Context, d *Delivery, reason string) (bool, error) {
	if d.Poisoned {
		return true, nil // the fetch script already moved it
	}
	dl := DeadLetter{Reason: reason, Queue: d.List, Time: b.now().UTC().Format(time.RFC3339Nano), Tag: d.Tag}
	if d.Message != nil {
		dl.TaskID, dl.Task = d.Message.ID, d.Message.Task
	}
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	moved, err := rdb.DeadLetterHeld(ctx, c, b.keys, d.Tag, encodeDeadLetter(dl, d.Raw))
	if err != nil {
		return false, fmt.Errorf("%w: dead-letter %s: %w", ErrBroker, d.Tag, err)
	}
	return moved, nil
}

// DeadLetters lists up to limit dead-letter entries, newest first (limit <= 0: all).
func (b *Broker) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	raws, err := rdb.DeadLetters(c, b.keys, limit)
	if err != nil {
		return nil, fmt.Errorf("%w: list dead letters: %w", ErrBroker, err)
	}
	out := make([]DeadLetter, 0, len(raws))
	for i, r := range raws {
		dl, err := parseDeadLetter(r)
		if err != nil {
			return out, fmt.Errorf("dead letter %d: %w", i, err)
		}
		out = append(out, dl)
	}
	return out, nil
}

func parseDeadLetter(r []byte) (DeadLetter, error) {
	var dl DeadLetter
	nl := -1
	for i, c := range r {
		if c == '\n' {
			nl = i
			break
		}
	}
	if nl < 0 {
		return dl, &DecodeError{Field: "deadletter", Err: errors.New("no newline after the metadata")}
	}
	if err := json.Unmarshal(r[:nl], &dl); err != nil {
		return dl, &DecodeError{Field: "deadletter.meta", Err: err}
	}
	dl.Raw = append([]byte(nil), r[nl+1:]...)
	dl.At, _ = time.Parse(time.RFC3339Nano, dl.Time)
	return dl, nil
}

// Refresh rewrites the un-acked score of tags to now, so that no restore sweep treats messages
// this process still holds (running, prefetched or waiting for their ETA) as abandoned. Tags no
// longer held are left alone (ZADD XX).
func (b *Broker) Refresh(ctx context.Context, tags []string) error {
	if len(tags) == 0 {
		return nil
	}
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := rdb.Refresh(c, b.keys, tags, unixScore(b.now())); err != nil {
		return fmt.Errorf("%w: refresh: %w", ErrBroker, err)
	}
	return nil
}

// Requeue puts a held delivery back on its queue and releases it: at the back of the line
// (LPUSH, like kombu's reject with requeue) when back is true, otherwise at the front (RPUSH,
// like kombu's restore). The message is marked redelivered.
func (b *Broker) Requeue(ctx context.Context, tag string, back bool) (bool, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	return b.restoreTag(ctx, c, tag, back)
}

// restoreLockTTL is how long our sweeps hold unacked_mutex at most. kombu uses 300 s; a worker
// killed mid-sweep then blocks every worker's sweep (Python's too) for five minutes. Our sweeps
// take milliseconds, so a shorter expiry bounds that stall without letting two sweeps overlap.
const restoreLockTTL = 30 * time.Second

// RestoreVisible is kombu's visibility-timeout sweep: under the shared unacked_mutex it puts back
// every un-acked message delivered more than VisibilityTimeout ago, whichever worker (Python or
// Go) took it. It returns how many were restored; skipped is true when another worker held the
// lock.
func (b *Broker) RestoreVisible(ctx context.Context) (restored int, skipped bool, err error) {
	c, err := b.conn(ctx)
	if err != nil {
		return 0, false, err
	}
	defer c.Close()
	token := uuid.NewString()
	ok, err := rdb.LockUnacked(c, b.keys, token, restoreLockTTL)
	if err != nil {
		return 0, false, fmt.Errorf("%w: take unacked_mutex: %w", ErrBroker, err)
	}
	if !ok {
		return 0, true, nil
	}
	defer rdb.UnlockUnacked(context.WithoutCancel(ctx), c, b.keys, token) //nolint:errcheck // lock expires anyway
	ceiling := unixScore(b.now().Add(-b.cfg.VisibilityTimeout))
	tags, err := rdb.DueUnacked(c, b.keys, ceiling)
	if err != nil {
		return 0, false, fmt.Errorf("%w: list due un-acked messages: %w", ErrBroker, err)
	}
	var errs []error
	for _, tag := range tags {
		moved, err := b.restoreTag(ctx, c, tag, false)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if moved {
			restored++
		}
	}
	return restored, false, errors.Join(errs...)
}

// restoreTag moves one held message back to its queue with the redelivered flags set, if it is
// still held unchanged.
func (b *Broker) restoreTag(ctx context.Context, c redis.Conn, tag string, back bool) (bool, error) {
	held, err := rdb.Held(c, b.keys, tag)
	if err == nil && held == nil {
		return false, nil // no longer held
	}
	if err != nil {
		return false, fmt.Errorf("%w: read un-acked %s: %w", ErrBroker, tag, err)
	}
	var parts []json.RawMessage
	var exchange, routingKey string
	if err := json.Unmarshal(held, &parts); err != nil || len(parts) != 3 ||
		json.Unmarshal(parts[1], &exchange) != nil || json.Unmarshal(parts[2], &routingKey) != nil {
		return false, b.deadLetterHeld(ctx, c, tag, held, held, "un-acked entry is not [envelope, exchange, routing_key]")
	}
	env := []byte(parts[0])
	priority := 0
	if m, derr := b.codec.Decode(env); derr == nil {
		m.Redelivered, m.DeliveryInfo.Redelivered = true, true
		priority = m.Priority
		if enc, eerr := b.codec.Encode(m); eerr == nil {
			env = enc
		}
	} else {
		priority = rawPriority(env)
	}
	target := b.keys.Queue(routingKey, priorityStep(priority))
	if exchange != "" {
		lists, rerr := b.route(c, &Message{DeliveryInfo: DeliveryInfo{Exchange: exchange, RoutingKey: routingKey}, Priority: priority})
		if errors.Is(rerr, ErrNoRoute) {
			return false, b.deadLetterHeld(ctx, c, tag, held, parts[0], "restore: "+rerr.Error())
		}
		if rerr != nil {
			return false, rerr
		}
		target = lists[0]
	}
	moved, err := rdb.Restore(ctx, c, b.keys, target, tag, held, env, back)
	if err != nil {
		return false, fmt.Errorf("%w: restore %s: %w", ErrBroker, tag, err)
	}
	return moved, nil
}

func (b *Broker) deadLetterHeld(ctx context.Context, c redis.Conn, tag string, held, raw []byte, reason string) error {
	dl := DeadLetter{Reason: reason, Time: b.now().UTC().Format(time.RFC3339Nano), Tag: tag}
	if _, err := rdb.DeadLetterHeld(ctx, c, b.keys, tag, encodeDeadLetter(dl, raw)); err != nil {
		return fmt.Errorf("%w: dead-letter %s: %w", ErrBroker, tag, err)
	}
	return nil
}

// rawPriority reads properties.priority from an envelope the codec refused (kombu restores
// those too).
func rawPriority(env []byte) int {
	var e struct {
		Properties struct {
			Priority int `json:"priority"`
		} `json:"properties"`
	}
	_ = json.Unmarshal(env, &e)
	return min(max(e.Properties.Priority, 0), 9)
}
