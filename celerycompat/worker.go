package celerycompat

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"
)

// UnknownTaskPolicy says what a worker does with a message for a task it has no handler for.
type UnknownTaskPolicy int

const (
	// UnknownDeadLetter (the default) moves the message to the dead-letter list with the reason,
	// stores FAILURE NotRegistered as Celery does, and fires task_unknown.
	UnknownDeadLetter UnknownTaskPolicy = iota
	// UnknownRequeue puts the message back at the end of its queue for another worker (say, a
	// Python one serving the same queue) to take. Use it only when such a worker exists.
	UnknownRequeue
)

// WorkerConfig configures a Worker. The zero value serves queue "celery" one task at a time with
// acks_late, like the original rig's Celery worker.
type WorkerConfig struct {
	// Hostname is the node name (Celery's -n), default "celerybridge.<pid>@<host>".
	Hostname string
	// Queues to consume, default ["celery"]. Several queues are served round-robin, as Celery's
	// default queue_order_strategy does.
	Queues []string
	// Concurrency is how many tasks run at once (default 1).
	Concurrency int
	// PrefetchMultiplier is Celery's worker_prefetch_multiplier (default 1, as the original rig
	// sets it; Celery's own default is 4). At most Concurrency*PrefetchMultiplier messages are held
	// un-acked, not counting those waiting for an ETA.
	PrefetchMultiplier int
	// AcksEarly acknowledges a message when it starts running (Celery's acks_late=False). The
	// default is acks_late: acknowledge after the result is stored and the hooks have run.
	AcksEarly bool
	// TrackStarted stores STARTED before a task runs (task_track_started).
	TrackStarted bool
	// StartedAfter, with TrackStarted, stores STARTED only once a task has been running this
	// long; a task that ends sooner goes straight to its outcome, saving a round trip per task
	// where most tasks are short. 0 stores STARTED before the task runs, as Celery does. The
	// outcome is never stored before a STARTED that was begun.
	StartedAfter time.Duration
	// UnknownTasks says what to do with a task no handler is registered for.
	UnknownTasks UnknownTaskPolicy
	// Backend stores results: the Redis *Backend, or another ResultBackend such as package
	// amqp's rpc:// one. Nil stores none.
	Backend ResultBackend
	// Hooks receive the worker's events; nil gives the worker an empty set, which Worker.Hooks
	// returns for connecting hooks later.
	Hooks *Hooks
	// RefreshInterval is how often the scores of held messages are refreshed (default a quarter of
	// the visibility timeout, at most 60 s).
	RefreshInterval time.Duration
	// RestoreInterval is how often the visibility-timeout restore sweep runs (default 10 s; kombu
	// sweeps about every 100 s). A sweep also runs at start.
	RestoreInterval time.Duration
	// IdleWait is how long one blocking wait for a message lasts while every queue is empty
	// before the worker renews it and fetches once more (default 2 s). A message wakes the worker
	// at once; IdleWait only sets the idle cost (see "Losing nothing" in the celerybridge package
	// doc). While idle the worker holds four pool connections per queue (one per priority list),
	// so size the pool for it; keep IdleWait below the connections' read timeout, if any.
	IdleWait time.Duration
	// PollOnly makes an idle worker poll instead of waiting (as on Redis < 6.2, which has no
	// BLMOVE and where the worker polls anyway).
	PollOnly bool
	// PollInterval is the longest wait between fetch attempts while polling (default 50 ms; the
	// wait starts at 1 ms and doubles).
	PollInterval time.Duration
	// ShutdownTimeout bounds the drain when Run's context is cancelled (default: wait for every
	// running task, as Celery's warm shutdown does).
	ShutdownTimeout time.Duration
	// HookRetryTimeout bounds how long a BeforeAck task_success, task_failure, task_retry or
	// task_revoked hook that returns an error is retried (with backoff) before the message is put
	// back, not acked, so the task runs again later and its hooks with it (default 30 s). Other
	// hooks are never retried: their errors are logged.
	HookRetryTimeout time.Duration
	// DisableControl keeps the worker out of Celery's remote-control mailbox (celery inspect and
	// control, Flower's inspector, revoke broadcasts). Celery workers always listen, and so does
	// this one by default; the listener holds one pool connection while the worker runs.
	DisableControl bool
	// WithoutMingle skips the hello a starting worker sends to the other workers to learn their
	// revoked task ids and clock (Celery's --without-mingle). Mingle needs the control mailbox:
	// DisableControl skips it too.
	WithoutMingle bool
	// SendEvents publishes task events for Flower and `celery events` (Celery's -E); the
	// enable_events and disable_events commands switch them at runtime.
	SendEvents bool
	// WithoutHeartbeat stops the worker-online, -heartbeat and -offline events (Celery's
	// --without-heartbeat). By default they are sent, as by a Celery worker without -E.
	WithoutHeartbeat bool
	// HeartbeatInterval is the worker-heartbeat period (default 2 s, Celery's freq).
	HeartbeatInterval time.Duration
	// MaxConcurrency caps pool_grow (default max(Concurrency, 64)).
	MaxConcurrency int
	// RevokesMax and RevokeExpires bound the revoked-id set (defaults 50000 and 3 h, Celery's).
	RevokesMax    int
	RevokeExpires time.Duration
	// Logger receives worker logs (keys task_id, task, queue); nil is silent.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type registered struct {
	handler Handler
	cfg     taskConfig
}

// Worker runs Celery tasks from Redis, side by side with Python Celery workers on the same queues.
// Register handlers, then call Run. A Worker is safe for concurrent use.
type Worker struct {
	transport Transport
	broker    *Broker  // the transport when it is Redis (stats, add_consumer's declaration)
	fanout    Fanout   // remote control and events; nil when the transport carries tasks only
	cons      Consumer // while Run runs
	producer  *Producer
	cfg       WorkerConfig
	log       *slog.Logger
	now       func() time.Time
	hooks     *Hooks
	pid       int

	mu       sync.Mutex
	tasks    map[string]*registered
	mw       []Middleware
	state    workerState
	inflight map[string]*inflight // by delivery tag: prefetched, ETA-held and running
	stop     chan struct{}        // closed to stop fetching
	done     chan struct{}        // closed when Run has returned
	hardStop context.CancelFunc   // cancels running handlers
	hard     chan struct{}        // closed when Shutdown's context ends

	acking sync.WaitGroup // acknowledgements under way after their task (acks_late)
	ready  chan *inflight // prefetched messages waiting for a slot
	slots  chan struct{}  // prefetch window
	stats  workerStats
	outage outageLog
	ctl    *workerControl // remote control, events, revokes, rate limits
}

type workerState int

const (
	stateNew workerState = iota
	stateRunning
	stateClosed
)

// NewWorker returns a worker consuming through t: a *Broker (Redis) or another Transport, such
// as package amqp's. Remote control, mingle, worker heartbeats and SendEvents need a transport
// that carries them (a FanoutTransport, as both of those are); on another one the first three are
// off, and NewWorker refuses SendEvents.
func NewWorker(t Transport, cfg WorkerConfig) (*Worker, error) {
	if t == nil || reflectNil(t) {
		return nil, fmt.Errorf("%w: nil transport", ErrInvalidConfig)
	}
	if cfg.Backend != nil && nilBackend(cfg.Backend) {
		cfg.Backend = nil // a nil *Backend stores none, as before the ResultBackend interface
	}
	broker, _ := t.(*Broker)
	fanout := fanoutOf(t)
	if fanout == nil && cfg.SendEvents {
		return nil, fmt.Errorf("%w: SendEvents needs a transport that carries events (FanoutTransport)", ErrInvalidConfig)
	}
	if fanout == nil {
		cfg.DisableControl, cfg.WithoutHeartbeat = true, true
	}
	if cfg.Concurrency < 0 || cfg.PrefetchMultiplier < 0 || cfg.MaxConcurrency < 0 {
		return nil, fmt.Errorf("%w: negative concurrency or prefetch multiplier", ErrInvalidConfig)
	}
	if cfg.StartedAfter < 0 {
		return nil, fmt.Errorf("%w: negative StartedAfter %v", ErrInvalidConfig, cfg.StartedAfter)
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.PrefetchMultiplier == 0 {
		cfg.PrefetchMultiplier = 1
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = []string{DefaultQueue}
	}
	for _, q := range cfg.Queues {
		if q == "" {
			return nil, fmt.Errorf("%w: empty queue name", ErrInvalidConfig)
		}
	}
	pid := os.Getpid()
	if cfg.Hostname == "" {
		host, _ := os.Hostname()
		cfg.Hostname = "celerybridge." + strconv.Itoa(pid) + "@" + host
	}
	if cfg.HookRetryTimeout <= 0 {
		cfg.HookRetryTimeout = DefaultHookRetryTimeout
	}
	producer, err := NewProducer(t, ProducerConfig{Backend: cfg.Backend, Origin: cfg.Hostname, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	w := &Worker{
		transport: t, broker: broker, fanout: fanout, producer: producer, cfg: cfg, log: cfg.Logger, now: cfg.Now,
		hooks: cfg.Hooks, pid: pid, tasks: map[string]*registered{},
		inflight: map[string]*inflight{},
		stop:     make(chan struct{}), done: make(chan struct{}),
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.hooks == nil {
		w.hooks = &Hooks{}
	}
	w.outage.log = w.log
	w.ctl = newWorkerControl(w)
	return w, nil
}

// Hostname returns the worker's node name.
func (w *Worker) Hostname() string { return w.cfg.Hostname }

// Hooks returns the worker's hooks, to connect more.
func (w *Worker) Hooks() *Hooks { return w.hooks }

// Register adds a handler for the Celery task name (e.g. "tasks.process_task"). Registering a
// name twice is ErrDuplicateTask.
func (w *Worker) Register(name string, h Handler, opts ...TaskOption) error {
	if name == "" || h == nil {
		return fmt.Errorf("%w: task name and handler are required", ErrInvalidConfig)
	}
	if c, ok := h.(interface{ checkBinding() error }); ok { // Typed: check the parameter names now
		if err := c.checkBinding(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidConfig, name, err)
		}
	}
	cfg := defaultTaskConfig()
	for _, o := range opts {
		o(&cfg)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, dup := w.tasks[name]; dup {
		return fmt.Errorf("%w: %s", ErrDuplicateTask, name)
	}
	w.tasks[name] = &registered{handler: h, cfg: cfg}
	return nil
}

// Use adds middleware around every handler (applied in the order given, the first outermost).
func (w *Worker) Use(mw ...Middleware) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mw = append(w.mw, mw...)
}

// Registered returns the registered task names.
func (w *Worker) Registered() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := make([]string, 0, len(w.tasks))
	for n := range w.tasks {
		names = append(names, n)
	}
	return names
}

func (w *Worker) lookup(name string) (Handler, taskConfig, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.tasks[name]
	if !ok {
		return nil, taskConfig{}, false
	}
	h := r.handler
	for i := len(w.mw) - 1; i >= 0; i-- {
		h = w.mw[i](h)
	}
	return h, r.cfg, true
}

// Run consumes and runs tasks until ctx is cancelled or Shutdown is called, then drains: it
// stops fetching, puts prefetched and ETA-held messages back on their queues, and waits for
// running tasks (up to ShutdownTimeout when set). Redis outages do not stop it: it backs off and
// reconnects. It returns nil after a clean drain, ctx's error if the drain timed out, and
// ErrWorkerClosed if the worker already ran.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.state != stateNew {
		w.mu.Unlock()
		return ErrWorkerClosed
	}
	w.state = stateRunning
	w.mu.Unlock()
	prefetch := w.cfg.Concurrency * w.cfg.PrefetchMultiplier
	cons, err := w.transport.Consume(ctx, ConsumerConfig{
		Queues: w.cfg.Queues, Prefetch: prefetch, Hostname: w.cfg.Hostname, Logger: w.log,
		PollOnly: w.cfg.PollOnly, IdleWait: w.cfg.IdleWait, PollInterval: w.cfg.PollInterval,
		RefreshInterval: w.cfg.RefreshInterval, RestoreInterval: w.cfg.RestoreInterval,
	})
	if err != nil {
		w.mu.Lock()
		w.state = stateClosed
		w.mu.Unlock()
		close(w.done)
		return fmt.Errorf("consume %v: %w", w.cfg.Queues, err)
	}
	w.mu.Lock()
	w.cons = cons
	w.ready = make(chan *inflight, w.slotCapacity())
	w.slots = make(chan struct{}, w.slotCapacity())
	for range w.slotCapacity() - prefetch {
		w.slots <- struct{}{} // spare capacity for pool_grow
	}
	w.mu.Unlock()
	defer close(w.done)

	runCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	w.hardStop = hardStop
	defer hardStop()

	var execs sync.WaitGroup
	spawn := func() { execs.Add(1); go func() { defer execs.Done(); w.execLoop(runCtx) }() }
	for range w.cfg.Concurrency {
		spawn()
	}
	w.startControl(runCtx, spawn)
	if !w.cfg.DisableControl && !w.cfg.WithoutMingle {
		w.mingle(runCtx)
	}
	_ = w.hooks.ready.fire(runCtx, "", &WorkerReady{Hostname: w.cfg.Hostname}, w.logPanic)
	w.log.Info("worker ready", "hostname", w.cfg.Hostname, "queues", w.cfg.Queues,
		"concurrency", w.cfg.Concurrency, "prefetch", prefetch)

	fetchDone := make(chan struct{})
	go func() { defer close(fetchDone); w.fetchLoop(runCtx) }()

	select {
	case <-ctx.Done():
		w.signalStop()
	case <-w.stop:
	}
	<-fetchDone

	// Drain: messages not yet started go back to the front of their queues.
	w.requeueWaiting(context.WithoutCancel(ctx))
	close(w.ready)

	drained := make(chan struct{})
	go func() { execs.Wait(); w.acking.Wait(); close(drained) }()
	err = nil
	var timeout <-chan time.Time
	if w.cfg.ShutdownTimeout > 0 {
		t := time.NewTimer(w.cfg.ShutdownTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-drained:
	case <-timeout:
		err = context.DeadlineExceeded
	case <-w.hardCh():
		err = context.Canceled
	}
	hardStop()
	<-drained
	w.stopControl()
	if err := cons.Close(context.WithoutCancel(ctx)); err != nil {
		w.log.Warn("closing the consumer", "error", err)
	}
	_ = w.hooks.shutdown.fire(context.WithoutCancel(ctx), "", &WorkerShutdown{Hostname: w.cfg.Hostname}, w.logPanic)
	w.mu.Lock()
	w.state = stateClosed
	w.mu.Unlock()
	w.log.Info("worker stopped", "hostname", w.cfg.Hostname)
	return err
}

func (w *Worker) signalStop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
}

// hardCh is closed when Shutdown's context expires (see Shutdown).
func (w *Worker) hardCh() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.hard == nil {
		w.hard = make(chan struct{})
	}
	return w.hard
}

// Shutdown stops fetching, puts waiting messages back, and waits for running tasks to finish
// (Celery's warm shutdown). If ctx ends first, running handlers' contexts are cancelled (Celery's
// cold shutdown): a task whose handler then returns an error is not a failure (no FAILURE stored,
// no failure hooks) and, with acks_late, its message goes straight back to the front of its queue
// to run again; Shutdown returns ctx.Err(). Calls after the worker has stopped return
// ErrWorkerClosed.
func (w *Worker) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	st := w.state
	w.mu.Unlock()
	switch st {
	case stateNew:
		w.mu.Lock()
		w.state = stateClosed
		w.mu.Unlock()
		return nil
	case stateClosed:
		return ErrWorkerClosed
	}
	w.signalStop()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.hardCh()
		w.mu.Lock()
		select {
		case <-w.hard:
		default:
			close(w.hard)
		}
		w.mu.Unlock()
		<-w.done
		return ctx.Err()
	}
}

func (w *Worker) logPanic(err error) {
	w.log.Error("hook panicked", "error", err)
}
