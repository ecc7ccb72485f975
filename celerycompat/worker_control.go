package celerycompat

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// The worker's side of remote control: it joins the pidbox mailbox like a Celery worker
// (celery/worker/pidbox.py, kombu/pidbox.py Node), answers inspect and control commands, and runs
// the event dispatcher and heartbeats Flower watches.

// pidboxPing is how often the mailbox connection is pinged; a connection silent for three
// intervals is taken as lost and replaced.
const pidboxPing = time.Second

// workerControl holds a worker's remote-control and monitoring state. Safe for concurrent use.
//
// Shutdown order (Run): the pidbox listener stops first (so no command arrives during the
// drain's end), then the heartbeat loop (which queues worker-offline), then the event dispatcher
// (which publishes what is queued).
type workerControl struct {
	clock     lamportClock
	revoked   *revokedSet
	events    *eventDispatcher
	heartbeat time.Duration

	mu      sync.Mutex
	started time.Time
	rates   map[string]*tokenBucket // rate_limit, by task name
	limits  map[string]limitOverride
	// terminate holds revoke-with-terminate requests for tasks that were starting (active, but
	// without a context to cancel yet); run takes them.
	terminate map[string]*TerminatedError
	queues    []string // consumed queues in the order added (active_queues)
	conc      int      // executors now (pool_grow / pool_shrink)
	maxConc   int
	shrink    chan struct{} // one token per executor asked to exit
	spawn     func()        // starts one more executor; nil outside Run

	stop       chan struct{}
	pidboxDone chan struct{}
	hbDone     chan struct{}
	outage     outageLog
}

// limitOverride is a time_limit command's soft and hard limits for a task (nil: none).
type limitOverride struct{ hard, soft *time.Duration }

func newWorkerControl(w *Worker) *workerControl {
	c := &workerControl{
		revoked:   newRevokedSet(w.cfg.RevokesMax, w.cfg.RevokeExpires, w.now),
		heartbeat: w.cfg.HeartbeatInterval,
		queues:    append([]string(nil), w.cfg.Queues...),
		conc:      w.cfg.Concurrency,
		maxConc:   max(w.cfg.MaxConcurrency, w.cfg.Concurrency),
	}
	if c.heartbeat <= 0 {
		c.heartbeat = DefaultHeartbeatInterval
	}
	if w.cfg.MaxConcurrency <= 0 {
		c.maxConc = max(w.cfg.Concurrency, 64)
	}
	c.shrink = make(chan struct{}, c.maxConc)
	c.events = newEventDispatcher(w, &c.clock)
	c.outage.log = w.log
	return c
}

// slotCapacity is the size of the prefetch window's channels: room for pool_grow up to maxConc.
func (w *Worker) slotCapacity() int { return w.ctl.maxConc * w.cfg.PrefetchMultiplier }

// startControl starts events, heartbeats and the mailbox listener; spawn starts one executor.
func (w *Worker) startControl(ctx context.Context, spawn func()) {
	c := w.ctl
	c.mu.Lock()
	c.started, c.spawn = w.now(), spawn
	c.stop = make(chan struct{})
	c.mu.Unlock()
	c.events.start()
	if c.events.workerOn {
		c.hbDone = make(chan struct{})
		go w.heartbeatLoop(c.stop, c.hbDone)
	}
	if !w.cfg.DisableControl {
		c.pidboxDone = make(chan struct{})
		go w.pidboxLoop(ctx, c.stop, c.pidboxDone)
	}
}

// stopControl stops what startControl started, in the documented order.
func (w *Worker) stopControl() {
	c := w.ctl
	c.mu.Lock()
	c.spawn = nil
	c.mu.Unlock()
	if c.stop == nil {
		return
	}
	close(c.stop)
	if c.pidboxDone != nil {
		<-c.pidboxDone
	}
	if c.hbDone != nil {
		<-c.hbDone
	}
	c.events.close()
}

// pidboxLoop keeps the worker in the mailbox: join, serve; after a broker failure it backs off
// and joins again, logging once per outage. Leaving (Close) unbinds the node, as a Celery worker
// does at shutdown.
func (w *Worker) pidboxLoop(ctx context.Context, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	// The session's context ends with stop, so that a blocked Receive returns.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-stop:
			cancel()
		case <-sctx.Done():
		}
	}()
	for {
		err := w.pidboxSession(sctx)
		if err == nil || sctx.Err() != nil {
			return
		}
		d := w.ctl.outage.fail("remote control", err)
		t := time.NewTimer(d)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// pidboxSession joins the mailbox and serves commands until ctx ends (nil) or the mailbox's
// connection fails (the error).
func (w *Worker) pidboxSession(ctx context.Context) error {
	mb, err := w.fanout.JoinMailbox(ctx, w.cfg.Hostname)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := mb.Close(cctx); err != nil {
			w.log.Debug("could not leave the mailbox cleanly", "error", err)
		}
	}()
	w.ctl.outage.ok()
	for {
		d, err := mb.Receive(ctx)
		var de *DecodeError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &de):
			w.log.Warn("undecodable remote-control message dropped", "error", err)
			continue
		case err != nil:
			return err
		}
		w.handleControl(ctx, d)
	}
}

// errNoReply is returned by a command that sends no reply (shutdown, like Python's SystemExit).
var errNoReply = errors.New("no reply")

// handleControl runs one mailbox message the way kombu's Node.handle_message does.
func (w *Worker) handleControl(ctx context.Context, env *FanoutDelivery) {
	w.ctl.clock.adjust(int64(env.headerFloat("clock")))
	body, err := env.value()
	var req *controlRequest
	if err == nil {
		req, err = decodeControlRequest(body)
	}
	if err != nil {
		w.log.Warn("undecodable remote-control message dropped", "error", err)
		return
	}
	if !w.addressed(req) {
		return
	}
	reply, err := w.controlCommand(ctx, req)
	if errors.Is(err, errNoReply) {
		return
	}
	if err != nil {
		w.log.Warn("remote-control command failed", "method", req.Method, "error", err)
		reply = map[string]any{"error": err.Error()}
	}
	if req.ReplyTo == nil {
		return
	}
	if err := w.sendReply(ctx, req, reply); err != nil {
		w.log.Warn("could not send a remote-control reply", "method", req.Method, "error", err)
	}
}

// addressed applies the request's destination, or its pattern and matcher.
func (w *Worker) addressed(req *controlRequest) bool {
	node := w.cfg.Hostname
	switch {
	case len(req.Destination) > 0:
		for _, d := range req.Destination {
			if d == node {
				return true
			}
		}
		return false
	case req.Pattern != "" && req.Matcher != "":
		return matchNode(node, req.Pattern, req.Matcher)
	}
	return true
}

// matchNode is kombu.matcher.match: "glob" is fnmatch(node, pattern), "pcre" is
// re.match(pattern, node) (anchored at the start only). An unknown matcher matches nothing.
func matchNode(node, pattern, matcher string) bool {
	var expr string
	switch matcher {
	case "glob":
		expr = globRegexp(pattern)
	case "pcre":
		expr = `^(?:` + pattern + `)`
	default:
		return false
	}
	re, err := regexp.Compile(expr)
	return err == nil && re.MatchString(node)
}

// globRegexp is Python's fnmatch.translate: * any run, ? one character, [seq] and [!seq].
func globRegexp(pat string) string {
	var b strings.Builder
	b.WriteString(`^(?s:`)
	for i := 0; i < len(pat); i++ {
		switch c := pat[i]; c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		case '[':
			j := i + 1
			if j < len(pat) && pat[j] == '!' {
				j++
			}
			if j < len(pat) && pat[j] == ']' {
				j++
			}
			for j < len(pat) && pat[j] != ']' {
				j++
			}
			if j >= len(pat) {
				b.WriteString(`\[`)
				continue
			}
			set := pat[i+1 : j]
			i = j
			if strings.HasPrefix(set, "!") {
				set = "^" + set[1:]
			} else if strings.HasPrefix(set, "^") {
				set = `\` + set
			}
			b.WriteString("[" + strings.ReplaceAll(set, `\`, `\\`) + "]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`)$`)
	return b.String()
}

// sendReply publishes {"<node>": reply} to the client's reply destination (the request's
// reply_to), with the request's ticket and the clock in the headers (kombu's _publish_reply).
func (w *Worker) sendReply(ctx context.Context, req *controlRequest, reply any) error {
	markers := w.transport.Codec().PeerVersion.AtLeast(Celery53)
	body, err := protocol.AppendJSON(nil, protocol.PyDict{{Key: w.cfg.Hostname, Value: reply}}, 0, markers)
	if err != nil {
		// An unencodable reply value: answer with the error instead, as a Python handler would.
		body, _ = protocol.AppendJSON(nil, protocol.PyDict{{Key: w.cfg.Hostname, Value: map[string]any{"error": "EncodeError(" + protocol.PyReprFull(err.Error()) + ")"}}}, 0, markers)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return w.fanout.Reply(ctx, &FanoutMessage{
		Exchange: orDefault(req.ReplyTo.Exchange, pidboxReplyExchange), RoutingKey: req.ReplyTo.RoutingKey,
		Headers: protocol.PyDict{{Key: "ticket", Value: strOrNil(req.Ticket)}, {Key: "clock", Value: w.ctl.clock.forward()}},
		Body:    body, DeliveryMode: 1, Markers: markers,
	})
}

// tokenBucket is kombu's TokenBucket with capacity 1, as Celery builds for a task rate limit.
type tokenBucket struct {
	text   string  // as given, e.g. "10/m"
	rate   float64 // tokens per second
	tokens float64
	last   time.Time
}

// take consumes a token and returns 0, or returns how long until one is available.
func (b *tokenBucket) take(now time.Time) time.Duration {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(1, b.tokens+el*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// rateHeld applies the task's rate limit before it runs: without a token the message is held
// (like an ETA) until one is due, and true is returned.
func (w *Worker) rateHeld(it *inflight) bool {
	c := w.ctl
	c.mu.Lock()
	b := c.rates[it.msg.Task]
	var wait time.Duration
	now := w.now()
	if b != nil {
		wait = b.take(now)
	}
	c.mu.Unlock()
	if wait <= 0 {
		return false
	}
	// Held like an ETA task but keeping its prefetch slot, as a rate-limited request keeps its
	// message un-acked within Celery's prefetch window: a backlog is not pulled into memory.
	w.mu.Lock()
	defer w.mu.Unlock()
	if it.state != stReserved {
		return false
	}
	it.state = stScheduled
	it.timer = time.AfterFunc(wait, func() {
		w.mu.Lock()
		if it.state != stScheduled {
			w.mu.Unlock()
			return
		}
		it.state = stReserved
		w.mu.Unlock()
		w.push(it) // it holds a slot, so the ready channel has room
	})
	return true
}

// takeTerminate returns (and forgets) a terminate that arrived for id before its handler's
// context existed. The caller holds w.mu.
func (w *Worker) takeTerminate(id string) *TerminatedError {
	c := w.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	te := c.terminate[id]
	delete(c.terminate, id)
	return te
}

// taskLimits applies time_limit overrides to a task's registered configuration.
func (w *Worker) taskLimits(task string, cfg taskConfig) taskConfig {
	c := w.ctl
	c.mu.Lock()
	o, ok := c.limits[task]
	c.mu.Unlock()
	if ok {
		cfg.timeLimit, cfg.softTimeLimit = 0, 0
		if o.hard != nil {
			cfg.timeLimit = *o.hard
		}
		if o.soft != nil {
			cfg.softTimeLimit = *o.soft
		}
	}
	return cfg
}

// isRevoked reports whether a message's id or one of its stamps is revoked.
func (w *Worker) isRevoked(m *Message) bool {
	return w.ctl.revoked.contains(m.ID) || w.ctl.revoked.stampRevoked(m)
}

// activeCount is the number of running tasks.
func (w *Worker) activeCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, it := range w.inflight {
		if it.state == stActive {
			n++
		}
	}
	return n
}

// terminatedCause returns the TerminatedError a task context was cancelled with, if any.
func terminatedCause(ctx context.Context) *TerminatedError {
	var te *TerminatedError
	if errors.As(context.Cause(ctx), &te) {
		return te
	}
	return nil
}

// strOrNil is s, or nil (JSON null) when s is empty.
func strOrNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}
