package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Dispatcher defaults.
const (
	DefaultConcurrency  = 16
	DefaultMaxAttempts  = 12
	DefaultMaxAge       = 24 * time.Hour
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultLeaseMargin is added to Timeout to give the default Lease.
	DefaultLeaseMargin = 30 * time.Second
)

// maxClaimBatch bounds how many events one claim leases.
const maxClaimBatch = 128

// maxSettleBatch bounds how many outcomes one settle call records.
const maxSettleBatch = 256

// settleTimeout bounds recording a batch of outcomes in Redis.
const settleTimeout = 10 * time.Second

// DispatcherConfig configures a Dispatcher. The zero value works with the defaults below. The
// dispatcher uses its Outbox's clock.
type DispatcherConfig struct {
	// Secret signs each request (see the package documentation). Empty: requests are unsigned.
	Secret []byte
	// Timeout bounds one request, connection included. Default DefaultTimeout (10 s).
	Timeout time.Duration
	// Lease is how long a claimed event stays reserved for this dispatcher. A dispatcher that
	// dies mid-send leaves its leases to expire, after which any dispatcher retries them. It
	// must exceed Timeout by more than the clock skew between dispatcher hosts. Default Timeout
	// + DefaultLeaseMargin.
	Lease time.Duration
	// Concurrency bounds the requests in flight. Default DefaultConcurrency.
	Concurrency int
	// PollInterval is the longest wait between claims when nothing is due. Enqueue on the same
	// Outbox wakes the dispatcher at once. Default DefaultPollInterval.
	PollInterval time.Duration
	// Linger, when set, is how long a dispatcher woken by Enqueue waits for more events before
	// it claims, so that a steady trickle (one task finishing at a time) goes out in groups:
	// fewer claims, and requests that arrive together, which a receiver that group-commits
	// (sqlitestore.Store) stores in one transaction. It adds up to Linger to each callback's
	// latency. Default 0: claim at once.
	Linger time.Duration
	// BackoffBase, BackoffCap and BackoffFactor shape the retry delay after a failed attempt n:
	// min(BackoffCap, BackoffBase·BackoffFactor^(n-1)), of which a random point in the upper
	// half is used. A usable Retry-After header replaces it (but is never shorter than
	// BackoffBase). Defaults DefaultBackoffBase, DefaultBackoffCap, DefaultBackoffFactor.
	BackoffBase   time.Duration
	BackoffCap    time.Duration
	BackoffFactor float64
	// MaxAttempts is how many attempts an event gets before it is dead-lettered. Default
	// DefaultMaxAttempts.
	MaxAttempts int
	// MaxAge is how long after Enqueue (or Replay) an event may still be retried. Default
	// DefaultMaxAge.
	MaxAge time.Duration
	// Client sends the requests. nil: a built-in fasthttp client (about a fifth less CPU per
	// request than net/http; it ignores HTTP_PROXY and the like). Set it for proxies, custom
	// TLS or transports. Its CheckRedirect is replaced: redirects are never followed, since
	// they could lead past the allow-list; the built-in client does not follow them either.
	Client *http.Client
	// UserAgent is sent with each request. Default DefaultUserAgent.
	UserAgent string
	// Logger receives delivery records (attribute keys event_id, task_id, url, attempt). nil: the
	// Outbox's logger.
	Logger *slog.Logger
}

// Dispatcher delivers the outbox's due events. Run it in the worker process or in a process of
// its own; any number of dispatchers may share an outbox, since claims are leased. A Dispatcher is
// safe for concurrent use; Run may be called once.
type Dispatcher struct {
	ob      *Outbox
	cfg     DispatcherConfig
	log     *slog.Logger
	sender  poster
	backoff backoff
	errLog  rateLimited // Redis failures
	failLog rateLimited // failed attempts that will be retried

	mu      sync.Mutex
	state   int           // dispatcherIdle, dispatcherRunning, dispatcherClosed
	stop    chan struct{} // closed by Shutdown
	done    chan struct{} // closed when Run has drained
	sendCtx context.Context
	abort   context.CancelFunc // cancels in-flight requests when Shutdown's ctx expires
}

const (
	dispatcherIdle = iota
	dispatcherRunning
	dispatcherClosed
)

// NewDispatcher returns a dispatcher for ob.
func NewDispatcher(ob *Outbox, cfg DispatcherConfig) (*Dispatcher, error) {
	if ob == nil {
		return nil, fmt.Errorf("%w: nil outbox", ErrInvalidConfig)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Lease == 0 {
		cfg.Lease = cfg.Timeout + DefaultLeaseMargin
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase = DefaultBackoffBase
	}
	if cfg.BackoffCap == 0 {
		cfg.BackoffCap = DefaultBackoffCap
	}
	if cfg.BackoffFactor == 0 {
		cfg.BackoffFactor = DefaultBackoffFactor
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	switch {
	case cfg.Timeout < 0, cfg.PollInterval < 0, cfg.BackoffBase < 0, cfg.MaxAge < 0, cfg.Linger < 0:
		return nil, fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	case cfg.Lease <= cfg.Timeout:
		return nil, fmt.Errorf("%w: Lease %v must exceed Timeout %v", ErrInvalidConfig, cfg.Lease, cfg.Timeout)
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("%w: Concurrency %d", ErrInvalidConfig, cfg.Concurrency)
	case cfg.BackoffCap < cfg.BackoffBase:
		return nil, fmt.Errorf("%w: BackoffCap %v below BackoffBase %v", ErrInvalidConfig, cfg.BackoffCap, cfg.BackoffBase)
	case cfg.BackoffFactor < 1:
		return nil, fmt.Errorf("%w: BackoffFactor %v below 1", ErrInvalidConfig, cfg.BackoffFactor)
	case cfg.MaxAttempts < 0:
		return nil, fmt.Errorf("%w: MaxAttempts %d", ErrInvalidConfig, cfg.MaxAttempts)
	}
	log := cfg.Logger
	if log == nil {
		log = ob.log
	}
	sendCtx, abort := context.WithCancel(context.Background())
	var sender poster
	if cfg.Client != nil {
		sender = newHTTPSender(cfg.Client, cfg.Concurrency, cfg.Secret, cfg.Timeout, cfg.UserAgent, ob.cfg.Clock)
	} else {
		fs := newFastSender(cfg.Concurrency, cfg.Secret, cfg.Timeout, cfg.UserAgent, ob.cfg.Clock)
		context.AfterFunc(sendCtx, fs.abort)
		sender = fs
	}
	return &Dispatcher{
		ob:      ob,
		cfg:     cfg,
		log:     log,
		sender:  sender,
		backoff: backoff{base: cfg.BackoffBase, cap: cfg.BackoffCap, factor: cfg.BackoffFactor},
		errLog:  rateLimited{every: 10 * time.Second, level: slog.LevelError},
		failLog: rateLimited{every: 10 * time.Second, level: slog.LevelWarn},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		sendCtx: sendCtx,
		abort:   abort,
	}, nil
}

// Run claims and delivers due events until ctx is cancelled or Shutdown is called, then stops
// claiming, lets the requests in flight finish (each bounded by Timeout), records their outcomes
// and returns nil. It returns ErrDispatcherClosed when the dispatcher already ran or was shut
// down. Redis outages are logged (rate-limited) and retried; they do not end Run.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.state != dispatcherIdle {
		d.mu.Unlock()
		return ErrDispatcherClosed
	}
	d.state = dispatcherRunning
	d.mu.Unlock()
	defer close(d.done)

	// In-flight requests and outcome recording outlive ctx (that is the drain); only Shutdown's
	// deadline aborts them.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go func() {
		select {
		case <-d.sendCtx.Done():
			cancelWork()
		case <-work.Done():
		}
	}()

	settled := make(chan outcome, 2*d.cfg.Concurrency)
	settlerDone := make(chan struct{})
	go func() {
		defer close(settlerDone)
		// Outcomes are recorded even after an abort: a released lease is better than one
		// left to expire.
		d.settleLoop(context.WithoutCancel(ctx), settled)
	}()

	// A fixed set of delivery goroutines: one per event would grow a fresh stack for every
	// request, which cost a tenth of the dispatcher's CPU.
	slots := make(chan struct{}, d.cfg.Concurrency)
	jobs := make(chan claimed, d.cfg.Concurrency)
	var inflight sync.WaitGroup
	for range d.cfg.Concurrency {
		inflight.Go(func() {
			for it := range jobs {
				oc := d.deliver(work, it)
				<-slots
				settled <- oc
			}
		})
	}
	d.claimLoop(ctx, work, slots, jobs)
	close(jobs)
	inflight.Wait()
	close(settled)
	<-settlerDone

	d.sender.closeIdle()
	d.mu.Lock()
	d.state = dispatcherClosed
	d.mu.Unlock()
	d.log.DebugContext(work, "callback dispatcher stopped")
	return nil
}

// Shutdown stops claiming and waits for Run to drain. When ctx ends first, it aborts the
// requests in flight (their events go back to the outbox undelivered, the attempt not counted),
// waits for Run to return and returns ctx.Err(). Later calls return ErrDispatcherClosed.
func (d *Dispatcher) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	switch d.state {
	case dispatcherClosed:
		d.mu.Unlock()
		return ErrDispatcherClosed
	case dispatcherIdle:
		d.state = dispatcherClosed
		d.mu.Unlock()
		d.abort()
		return nil
	}
	select {
	case <-d.stop:
		d.mu.Unlock()
		return ErrDispatcherClosed
	default:
		close(d.stop)
	}
	d.mu.Unlock()
	select {
	case <-d.done:
		d.abort()
		return nil
	case <-ctx.Done():
		d.abort()
		<-d.done
		return ctx.Err()
	}
}

// claimLoop leases due events as delivery slots free up and hands them to the delivery
// goroutines on jobs. It returns when ctx is cancelled or Shutdown is called.
func (d *Dispatcher) claimLoop(ctx, work context.Context, slots chan struct{}, jobs chan<- claimed) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// wait sleeps for dur or until an Enqueue nudges; false means stop.
	wait := func(dur time.Duration) bool {
		timer.Reset(dur)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-d.stop:
			return false
		case <-d.ob.wake:
			if d.cfg.Linger > 0 {
				timer.Reset(d.cfg.Linger)
				select {
				case <-ctx.Done():
					return false
				case <-d.stop:
					return false
				case <-timer.C:
				}
			}
		case <-timer.C:
		}
		return true
	}
	errDelay := d.cfg.PollInterval
	// Claim at least a quarter of the slots at a time: under load this keeps three quarters of
	// the requests in flight while amortising claims; when idle every slot is free anyway.
	need := max(1, min(d.cfg.Concurrency/4, maxClaimBatch))
	for {
		n := 0
		for n < need {
			select {
			case <-ctx.Done():
				return
			case <-d.stop:
				return
			case slots <- struct{}{}:
				n++
			}
		}
	grab:
		for n < maxClaimBatch {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break grab
			}
		}
		now := d.ob.cfg.Clock()
		items, next, reclaimed, err := d.ob.claim(work, now, now.Add(d.cfg.Lease), n)
		for range n - len(items) {
			<-slots
		}
		if err != nil {
			d.errLog.log(d.log, "callback claim failed; retrying", err)
			if !wait(errDelay) {
				return
			}
			errDelay = min(2*errDelay, 5*time.Second)
			continue
		}
		errDelay = d.cfg.PollInterval
		if reclaimed > 0 {
			d.log.WarnContext(work, "callback leases expired; events returned to the outbox", "count", reclaimed)
		}
		for _, it := range items {
			jobs <- it // never blocks: each item holds a slot, and jobs has room for all slots
		}
		if len(items) == n {
			continue // there may be more due right now
		}
		sleep := d.cfg.PollInterval
		if !next.IsZero() {
			sleep = min(sleep, next.Sub(d.ob.cfg.Clock()))
		}
		if !wait(max(sleep, time.Millisecond)) {
			return
		}
	}
}

// settleLoop records outcomes in batches until settled is closed.
func (d *Dispatcher) settleLoop(ctx context.Context, settled <-chan outcome) {
	batch := make([]outcome, 0, maxSettleBatch)
	for oc := range settled {
		batch = append(batch[:0], oc)
	more:
		for len(batch) < maxSettleBatch {
			select {
			case oc, ok := <-settled:
				if !ok {
					break more
				}
				batch = append(batch, oc)
			default:
				break more
			}
		}
		sctx, cancel := context.WithTimeout(ctx, settleTimeout)
		applied, err := d.ob.settle(sctx, d.ob.cfg.Clock(), batch)
		cancel()
		if err != nil {
			// The leases are still held: the events are retried once they expire.
			d.errLog.log(d.log, "callback outcomes not recorded; events will be retried after their lease", err,
				"count", len(batch))
			continue
		}
		for i, ok := range applied {
			if !ok {
				d.log.WarnContext(ctx, "callback lease lost before its outcome was recorded",
					"event_id", batch[i].id, "outcome", batch[i].action)
			}
		}
	}
}

// deliver makes one attempt at it and decides what happens next.
func (d *Dispatcher) deliver(ctx context.Context, it claimed) outcome {
	now := d.ob.cfg.Clock()
	rec, err := decodeRecord(it.record)
	if err != nil {
		return d.dead(ctx, it, "", deadInfo{Reason: "corrupt outbox record: " + err.Error()})
	}
	if it.attempt > d.cfg.MaxAttempts {
		return d.dead(ctx, it, rec.URL, d.lastInfo(ctx, it, fmt.Sprintf("max attempts (%d) reached", d.cfg.MaxAttempts)))
	}
	if now.Sub(it.since) > d.cfg.MaxAge {
		return d.dead(ctx, it, rec.URL, d.lastInfo(ctx, it, fmt.Sprintf("max age (%v) exceeded", d.cfg.MaxAge)))
	}
	if err := d.ob.allow.check(rec.URL); err != nil {
		return d.dead(ctx, it, rec.URL, deadInfo{Reason: err.Error()})
	}

	res, err := d.sender.send(ctx, rec.URL, it.id, withAttempt(rec.Payload, it.attempt))
	switch {
	case err != nil && (ctx.Err() != nil || errors.Is(err, errSendAborted)):
		// Only Shutdown's deadline cancels ctx (and aborts the sender): give the event back
		// without counting the attempt.
		d.log.InfoContext(ctx, "callback request aborted by shutdown", "event_id", it.id, "url", rec.URL)
		return outcome{action: actionRelease, id: it.id, token: it.token}
	case err == nil && res.status >= 200 && res.status < 300:
		d.log.DebugContext(ctx, "callback delivered", "event_id", it.id, "url", rec.URL, "attempt", it.attempt, "http_status", res.status)
		return outcome{action: actionOK, id: it.id, token: it.token}
	case err == nil && !retryable(res.status):
		return d.dead(ctx, it, rec.URL, deadInfo{
			Reason:     fmt.Sprintf("HTTP %d is not retryable", res.status),
			LastStatus: res.status, LastError: res.snippet,
		})
	}

	info := deadInfo{LastStatus: res.status, LastError: res.snippet}
	if err != nil {
		info.LastError = err.Error()
	}
	delay := d.backoff.delay(it.attempt)
	if res.hasRetry {
		delay = max(res.retryAfter, d.cfg.BackoffBase)
	}
	due := now.Add(delay)
	switch {
	case it.attempt >= d.cfg.MaxAttempts:
		info.Reason = fmt.Sprintf("max attempts (%d) reached", d.cfg.MaxAttempts)
		return d.dead(ctx, it, rec.URL, info)
	case due.Sub(it.since) > d.cfg.MaxAge:
		info.Reason = fmt.Sprintf("max age (%v) would be exceeded by the next attempt in %v", d.cfg.MaxAge, delay)
		return d.dead(ctx, it, rec.URL, info)
	}
	last, _ := json.Marshal(lastFailure{Status: info.LastStatus, Error: info.LastError, At: now.UnixMilli()})
	// One line per failed attempt would flood the log while a receiver is down: debug for each,
	// a rate-limited warning with the count in between.
	d.log.DebugContext(ctx, "callback attempt failed; will retry", "event_id", it.id, "url", rec.URL, "attempt", it.attempt,
		"http_status", res.status, "error", info.LastError, "retry_in", delay)
	d.failLog.log(d.log, "callback deliveries failing; retrying with backoff", errors.New(info.LastError),
		"event_id", it.id, "url", rec.URL, "attempt", it.attempt, "http_status", res.status)
	return outcome{action: actionRetry, id: it.id, token: it.token, data: fmt.Sprintf("%d|%s", due.UnixMilli(), last)}
}

// lastFailure is the JSON stored in Keys.Last.
type lastFailure struct {
	Status int    `json:"status"`
	Error  string `json:"error"`
	At     int64  `json:"at"`
}

// lastInfo builds a dead letter from the event's last recorded failure (for events that die at
// claim time, such as after repeated lease expiries).
func (d *Dispatcher) lastInfo(ctx context.Context, it claimed, reason string) deadInfo {
	info := deadInfo{Reason: reason}
	if b, err := d.ob.lastFailure(ctx, it.id); err == nil && b != nil {
		var lf lastFailure
		if json.Unmarshal(b, &lf) == nil {
			info.LastStatus, info.LastError = lf.Status, lf.Error
		}
	}
	return info
}

// dead builds a dead-letter outcome.
func (d *Dispatcher) dead(ctx context.Context, it claimed, url string, info deadInfo) outcome {
	info.Attempts = it.attempt
	d.log.WarnContext(ctx, "callback dead-lettered", "event_id", it.id, "url", url, "attempt", it.attempt,
		"reason", info.Reason, "http_status", info.LastStatus, "error", info.LastError)
	b, _ := json.Marshal(info)
	return outcome{action: actionDead, id: it.id, token: it.token, data: string(b)}
}
