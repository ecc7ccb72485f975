package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Pool hands out Redis connections. *redis.Pool from redigo satisfies it. The caller owns the
// pool; nothing in this package closes it.
type Pool interface {
	GetContext(ctx context.Context) (redis.Conn, error)
}

// DefaultDeliveredRetention is how long the outbox remembers delivered event ids by default:
// twice Celery's default visibility_timeout (1 h), after which an unacked task is redelivered.
const DefaultDeliveredRetention = 2 * time.Hour

// OutboxConfig configures an Outbox. The zero value works: default prefix, no default URL (so
// every event needs an allowed URL of its own), delivered ids remembered for two hours, wall
// clock, no logging.
type OutboxConfig struct {
	// Prefix is prepended to every Redis key (see Keys). Default DefaultPrefix.
	Prefix string
	// URL is the default destination, used for events without a URL of their own, e.g.
	// "http://127.0.0.1:8001/receive-task-result". It is always allowed.
	URL string
	// AllowedURLs lists the other destinations an Event.URL may name. An entry whose path is empty
	// or ends in "/" allows every URL on the same scheme and host under that path; any other entry
	// allows exactly that URL. Anything else is refused at Enqueue with a *URLError, so callers
	// cannot make the worker send requests to arbitrary hosts.
	AllowedURLs []string
	// DeliveredRetention is how long a delivered event id is remembered, so that enqueueing it
	// again (the task ran again after a crash before its ack) does not send it again. Keep it
	// above the broker's visibility_timeout. Each remembered id costs Redis about 140 bytes, so
	// at 100 callbacks/s the default holds about 100 MB (1 GB at 1000/s): lower it for such rates. Default
	// DefaultDeliveredRetention; negative disables it (the receiver still dedupes).
	DeliveredRetention time.Duration
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger receives debug and error records. nil: silent.
	Logger *slog.Logger
}

// Outbox is the durable record of callbacks still to be delivered, kept in Redis. Enqueue is
// what a worker hook calls; a Dispatcher delivers. An Outbox is safe for concurrent use, and any
// number of processes may share one (same pool target and prefix).
type Outbox struct {
	pool      Pool
	cfg       OutboxConfig
	keys      Keys
	allow     allowList
	log       *slog.Logger
	retention time.Duration
	// wake nudges local dispatchers after an Enqueue, so they need not wait for their poll.
	wake chan struct{}
}

// NewOutbox returns an outbox storing its records through pool.
func NewOutbox(pool Pool, cfg OutboxConfig) (*Outbox, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	allow, err := newAllowList(cfg.URL, cfg.AllowedURLs)
	if err != nil {
		return nil, err
	}
	retention := cfg.DeliveredRetention
	switch {
	case retention == 0:
		retention = DefaultDeliveredRetention
	case retention < 0:
		retention = 0
	}
	return &Outbox{
		pool:      pool,
		cfg:       cfg,
		keys:      newKeys(cfg.Prefix),
		allow:     allow,
		log:       loggerOrDiscard(cfg.Logger),
		retention: retention,
		wake:      make(chan struct{}, 1),
	}, nil
}

// Keys returns the names of the outbox's Redis keys.
func (o *Outbox) Keys() Keys { return o.keys }

// Enqueue records ev durably for delivery. It is idempotent by event id: while an event with the
// same id is pending, in flight or dead, or was delivered within DeliveredRetention, it does
// nothing and returns nil. Call it before acking the task: once it returns nil, the callback is
// delivered even if this process dies. An event URL that is not allowed returns a *URLError
// (ErrURLNotAllowed); an invalid event returns ErrInvalidEvent.
func (o *Outbox) Enqueue(ctx context.Context, ev Event) error {
	now := o.cfg.Clock()
	body, err := ev.payload(now)
	if err != nil {
		return err
	}
	id := ev.ID()
	dest := ev.URL
	switch {
	case dest == "" && o.cfg.URL == "":
		return fmt.Errorf("%w: task %s: no URL and no default URL configured", ErrInvalidEvent, ev.CeleryTaskID)
	case dest == "":
		dest = o.cfg.URL
	default:
		if err := o.allow.check(dest); err != nil {
			return fmt.Errorf("enqueue callback %s of task %s: %w", id, ev.CeleryTaskID, err)
		}
	}
	ms := now.UnixMilli()
	rec := record{URL: dest, Created: ms, Payload: body}.encode()
	n, err := o.enqueueScript(ctx, id, rec, ms)
	if err != nil {
		return redisError("enqueue "+id, err)
	}
	switch n {
	case 1:
		o.log.DebugContext(ctx, "callback enqueued", "event_id", id, "task_id", ev.CeleryTaskID, "status", string(ev.Status))
		select {
		case o.wake <- struct{}{}:
		default:
		}
	case 2:
		o.log.DebugContext(ctx, "callback already delivered", "event_id", id, "task_id", ev.CeleryTaskID)
	default:
		o.log.DebugContext(ctx, "callback already enqueued", "event_id", id, "task_id", ev.CeleryTaskID)
	}
	return nil
}

// enqueueAttempts bounds the tries of one Enqueue. The script is idempotent by event id, so a
// retry after a broken connection (a stale pooled one after a Redis restart, say) is safe.
const enqueueAttempts = 3

// enqueueScript runs the enqueue script, on a fresh connection again when the connection broke.
func (o *Outbox) enqueueScript(ctx context.Context, id string, rec []byte, ms int64) (int, error) {
	k := o.keys
	var err error
	for attempt := 0; attempt < enqueueAttempts; attempt++ {
		var c redis.Conn
		if c, err = o.pool.GetContext(ctx); err != nil {
			return 0, err
		}
		var n int
		n, err = redis.Int(enqueueScript.DoContext(ctx, c, k.Events, k.Due, k.Since, k.Delivered, id, rec, ms, ms))
		broken := c.Err() != nil
		c.Close()
		var rerr redis.Error
		if err == nil || errors.As(err, &rerr) || !broken || ctx.Err() != nil {
			return n, err
		}
	}
	return 0, err
}

// Stats counts the outbox's events.
type Stats struct {
	Pending  int64 // waiting in Due, including those backing off
	Ready    int64 // of Pending, due now
	InFlight int64 // leased to a dispatcher
	Dead     int64 // dead-lettered
}

// Stats returns the outbox depth, for metrics and alerts.
func (o *Outbox) Stats(ctx context.Context) (Stats, error) {
	c, err := o.pool.GetContext(ctx)
	if err != nil {
		return Stats{}, redisError("stats", err)
	}
	defer c.Close()
	v, err := redis.Int64s(statsScript.DoContext(ctx, c, o.keys.Due, o.keys.Leased, o.keys.Dead, o.cfg.Clock().UnixMilli()))
	if err != nil || len(v) != 4 {
		return Stats{}, redisError("stats", errOr(err, "unexpected reply"))
	}
	return Stats{Pending: v[0], Ready: v[1], InFlight: v[2], Dead: v[3]}, nil
}

// DeadLetter is an event the dispatcher gave up on.
type DeadLetter struct {
	EventID      string
	TaskID       string
	CeleryTaskID string
	TaskName     string
	Status       Status
	URL          string
	Reason       string // why it was dead-lettered
	LastStatus   int    // HTTP status of the last attempt; 0 when it got no response
	LastError    string // the last failure, e.g. a network error or the start of the response body
	Attempts     int
	CreatedAt    time.Time
	DeadAt       time.Time
	Payload      json.RawMessage // the body sent, without "attempt"
}

// deadInfo is the JSON stored in Keys.DeadInfo.
type deadInfo struct {
	Reason     string `json:"reason"`
	LastStatus int    `json:"last_status"`
	LastError  string `json:"last_error"`
	Attempts   int    `json:"attempts"`
}

// DeadLetters lists up to limit dead letters, oldest first; limit <= 0 lists all.
func (o *Outbox) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	c, err := o.pool.GetContext(ctx)
	if err != nil {
		return nil, redisError("list dead letters", err)
	}
	defer c.Close()
	k := o.keys
	vals, err := redis.Values(deadScript.DoContext(ctx, c, k.Dead, k.DeadInfo, k.Events, k.Attempts, k.Since, limit))
	if err != nil {
		return nil, redisError("list dead letters", err)
	}
	out := make([]DeadLetter, 0, len(vals)/6)
	for i := 0; i+5 < len(vals); i += 6 {
		id, _ := redis.String(vals[i], nil)
		deadMs, _ := redis.Int64(vals[i+1], nil)
		d := DeadLetter{EventID: id, DeadAt: time.UnixMilli(deadMs)}
		if b, err := redis.Bytes(vals[i+2], nil); err == nil {
			var info deadInfo
			if err := json.Unmarshal(b, &info); err == nil {
				d.Reason, d.LastStatus, d.LastError, d.Attempts = info.Reason, info.LastStatus, info.LastError, info.Attempts
			}
		}
		if b, err := redis.Bytes(vals[i+3], nil); err == nil {
			if rec, err := decodeRecord(b); err == nil {
				d.URL, d.CreatedAt, d.Payload = rec.URL, time.UnixMilli(rec.Created), rec.Payload
				var p wirePayload
				if err := json.Unmarshal(rec.Payload, &p); err == nil {
					d.TaskID, d.CeleryTaskID, d.TaskName, d.Status = p.TaskID, p.CeleryTaskID, p.TaskName, p.Status
				}
			}
		}
		if n, err := redis.Int(vals[i+4], nil); err == nil && n > d.Attempts {
			d.Attempts = n
		}
		out = append(out, d)
	}
	return out, nil
}

// Replay puts dead letters back into the outbox, due now, with a fresh attempt count and age.
// It returns nil when every id was replayed; a ReplayErrors aligned with ids when some were not
// (ErrNotDeadLetter for an id that is not dead-lettered); or another error when Redis failed.
func (o *Outbox) Replay(ctx context.Context, eventIDs ...string) error {
	if len(eventIDs) == 0 {
		return nil
	}
	c, err := o.pool.GetContext(ctx)
	if err != nil {
		return redisError("replay", err)
	}
	defer c.Close()
	k := o.keys
	args := []any{k.Events, k.Due, k.Attempts, k.Since, k.Last, k.Dead, k.DeadInfo, o.cfg.Clock().UnixMilli()}
	for _, id := range eventIDs {
		args = append(args, id)
	}
	res, err := redis.Ints(replayScript.DoContext(ctx, c, args...))
	if err != nil || len(res) != len(eventIDs) {
		return redisError("replay", errOr(err, "unexpected reply"))
	}
	errs := make(ReplayErrors, len(eventIDs))
	failed := false
	for i, r := range res {
		if r != 1 {
			errs[i] = fmt.Errorf("replay %s: %w", eventIDs[i], ErrNotDeadLetter)
			failed = true
		}
	}
	if failed {
		return errs
	}
	select {
	case o.wake <- struct{}{}:
	default:
	}
	o.log.InfoContext(ctx, "dead letters replayed", "count", len(eventIDs))
	return nil
}

// claimed is one event leased to a dispatcher.
type claimed struct {
	id      string
	attempt int
	since   time.Time
	token   string // the lease deadline in Unix ms, as sent to Redis
	record  []byte
}

// claim leases up to limit due events until leaseUntil. It also returns when the dispatcher
// should look again (zero: nothing pending) and how many expired leases were returned to Due.
func (o *Outbox) claim(ctx context.Context, now, leaseUntil time.Time, limit int) (items []claimed, next time.Time, reclaimed int, err error) {
	c, err := o.pool.GetContext(ctx)
	if err != nil {
		return nil, time.Time{}, 0, redisError("claim", err)
	}
	defer c.Close()
	k := o.keys
	token := strconv.FormatInt(leaseUntil.UnixMilli(), 10)
	vals, err := redis.Values(claimScript.DoContext(ctx, c, k.Due, k.Leased, k.Events, k.Attempts, k.Since,
		now.UnixMilli(), token, limit, 1000))
	if err != nil || len(vals) < 2 || (len(vals)-2)%4 != 0 {
		return nil, time.Time{}, 0, redisError("claim", errOr(err, "unexpected reply"))
	}
	if ms, _ := redis.Int64(vals[0], nil); ms >= 0 {
		next = time.UnixMilli(ms)
	}
	reclaimed, _ = redis.Int(vals[1], nil)
	for i := 2; i < len(vals); i += 4 {
		var it claimed
		it.id, _ = redis.String(vals[i], nil)
		it.attempt, _ = redis.Int(vals[i+1], nil)
		sinceMs, _ := redis.Int64(vals[i+2], nil)
		it.since = time.UnixMilli(sinceMs)
		it.record, _ = redis.Bytes(vals[i+3], nil)
		it.token = token
		items = append(items, it)
	}
	return items, next, reclaimed, nil
}

// settle actions; see settleScript.
const (
	actionOK      = "ok"
	actionRetry   = "retry"
	actionRelease = "release"
	actionDead    = "dead"
)

// outcome is the result of one attempt, to be recorded by settle.
type outcome struct {
	action string
	id     string
	token  string
	data   string
}

// settle records a batch of outcomes. applied[i] is false when the lease of outcomes[i] had
// passed to another dispatcher and the outcome was dropped.
func (o *Outbox) settle(ctx context.Context, now time.Time, outcomes []outcome) (applied []bool, err error) {
	c, err := o.pool.GetContext(ctx)
	if err != nil {
		return nil, redisError("settle", err)
	}
	defer c.Close()
	k := o.keys
	args := make([]any, 0, 11+4*len(outcomes))
	args = append(args, k.Events, k.Due, k.Leased, k.Attempts, k.Since, k.Last, k.Dead, k.DeadInfo, k.Delivered,
		now.UnixMilli(), o.retention.Milliseconds())
	for _, oc := range outcomes {
		args = append(args, oc.action, oc.id, oc.token, oc.data)
	}
	res, err := redis.Ints(settleScript.DoContext(ctx, c, args...))
	if err != nil || len(res) != len(outcomes) {
		return nil, redisError("settle", errOr(err, "unexpected reply"))
	}
	applied = make([]bool, len(res))
	for i, r := range res {
		applied[i] = r == 1
	}
	return applied, nil
}

// errOr returns err, or a new error with msg when err is nil.
func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s", msg)
}

// lastFailure returns the stored last failure of an event (nil when none).
func (o *Outbox) lastFailure(ctx context.Context, id string) ([]byte, error) {
	c, err := o.pool.GetContext(ctx)
	if err != nil {
		return nil, redisError("read last failure of "+id, err)
	}
	defer c.Close()
	b, err := redis.Bytes(redis.DoContext(c, ctx, "HGET", o.keys.Last, id))
	if errors.Is(err, redis.ErrNil) {
		return nil, nil
	}
	if err != nil {
		return nil, redisError("read last failure of "+id, err)
	}
	return b, nil
}
