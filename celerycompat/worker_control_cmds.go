package celerycompat

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Remote-control commands, with the reply shapes of celery/worker/control.py (Celery 5.7).

func ok(v string) map[string]any  { return map[string]any{"ok": v} }
func nok(v string) map[string]any { return map[string]any{"error": v} }

// pyError is a handler failure, replied as {"error": "<repr>"} like kombu's Node.dispatch.
type pyError string

func (e pyError) Error() string { return string(e) }

// controlCommand runs one command. An unknown one fails like Python's handler lookup.
func (w *Worker) controlCommand(ctx context.Context, req *controlRequest) (any, error) {
	a := req.Arguments
	switch req.Method {
	case "ping":
		return ok("pong"), nil
	case "active", "dump_active":
		safe, _ := a["safe"].(bool)
		return w.requestInfos(func(it *inflight) bool { return it.state == stActive }, safe), nil
	case "reserved", "dump_reserved":
		return w.requestInfos(w.isReserved, false), nil
	case "scheduled", "dump_schedule":
		return w.scheduledInfos(), nil
	case "registered", "dump_tasks":
		return w.registeredInfo(), nil
	case "stats":
		return w.statsInfo(), nil
	case "active_queues":
		return w.activeQueues(), nil
	case "query_task":
		return w.queryTask(maybeList(a["ids"])), nil
	case "revoked", "dump_revoked":
		return stringsAny(w.ctl.revoked.list()), nil
	case "report":
		return ok(w.report()), nil
	case "clock":
		return map[string]any{"clock": w.ctl.clock.value()}, nil
	case "conf", "dump_conf":
		return w.confInfo(), nil
	case "hello":
		return w.hello(a), nil
	case "heartbeat":
		w.ctl.events.sendWorker("worker-heartbeat", w.workerFields(5*time.Second))
		return nil, nil
	case "enable_events":
		if w.ctl.events.taskOn.Swap(true) {
			return ok("task events already enabled"), nil
		}
		w.log.Info("events of group {task} enabled by remote")
		return ok("task events enabled"), nil
	case "disable_events":
		if !w.ctl.events.taskOn.Swap(false) {
			return ok("task events already disabled"), nil
		}
		w.log.Info("events of group {task} disabled by remote")
		return ok("task events disabled"), nil
	case "revoke":
		term, _ := a["terminate"].(bool)
		return w.revokeCommand(ctx, maybeList(a["task_id"]), term, a["signal"])
	case "terminate":
		return w.revokeCommand(ctx, maybeList(a["task_id"]), true, a["signal"])
	case "revoke_by_stamped_headers":
		return w.revokeStamped(ctx, a)
	case "rate_limit":
		return w.rateLimitCommand(a)
	case "time_limit":
		return w.timeLimitCommand(a)
	case "add_consumer":
		return w.addConsumer(ctx, a)
	case "cancel_consumer":
		q, _ := a["queue"].(string)
		if err := w.setQueue(ctx, q, false); err != nil {
			return nil, pyError("OperationalError(" + protocol.PyReprFull(err.Error()) + ")")
		}
		return ok("no longer consuming from " + q), nil
	case "shutdown":
		w.log.Warn("got shutdown from remote")
		w.signalStop()
		return nil, errNoReply
	case "pool_grow":
		return w.poolResize(argInt(a["n"], 1))
	case "pool_shrink":
		return w.poolResize(-argInt(a["n"], 1))
	case "autoscale":
		return nil, pyError("ValueError('Autoscale not enabled')")
	case "pool_restart":
		return nil, pyError("ValueError('Pool restarts not enabled')")
	case "election":
		return nil, nil // no gossip
	}
	return nil, pyError("KeyError(" + protocol.PyReprFull(req.Method) + ")")
}

func stringsAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func argInt(v any, def int) int {
	if f, ok := numberOption(v); ok {
		return int(f)
	}
	if s, ok := v.(string); ok {
		if n, err := strconv.Atoi(s); err == nil {
			return n
		}
	}
	return def
}

// isReserved: prefetched and not started, including rate-limited ones, but not ETA-held ones.
// The caller holds w.mu.
func (w *Worker) isReserved(it *inflight) bool {
	return it.state == stReserved || (it.state == stScheduled && !w.etaHeld(it))
}

func (w *Worker) etaHeld(it *inflight) bool {
	return it.state == stScheduled && it.msg.ETA != nil && it.msg.ETA.After(w.now())
}

// requestInfo is Celery's Request.info(safe).
func (w *Worker) requestInfo(it *inflight, safe bool) protocol.PyDict {
	m := it.msg
	// Celery's Request.info gives [] and {} for a task sent without arguments, never null.
	var args, kwargs any = m.Args, m.Kwargs
	if m.Args == nil {
		args = []any{}
	}
	if m.Kwargs == nil {
		kwargs = map[string]any{}
	}
	if safe {
		args, kwargs = argsReprOf(m), kwargsReprOf(m)
	}
	var start, pid any
	if it.state == stActive {
		start, pid = unixFloat(it.started), w.pid
	}
	return protocol.PyDict{
		{Key: "id", Value: m.ID}, {Key: "name", Value: m.Task}, {Key: "args", Value: args}, {Key: "kwargs", Value: kwargs}, {Key: "type", Value: m.Task},
		{Key: "hostname", Value: w.cfg.Hostname}, {Key: "time_start", Value: start},
		{Key: "acknowledged", Value: it.state == stActive && w.cfg.AcksEarly},
		{Key: "delivery_info", Value: protocol.PyDict{{Key: "exchange", Value: m.DeliveryInfo.Exchange}, {Key: "routing_key", Value: m.DeliveryInfo.RoutingKey},
			{Key: "priority", Value: m.Priority}, {Key: "redelivered", Value: m.Redelivered || m.DeliveryInfo.Redelivered}}},
		{Key: "worker_pid", Value: pid},
	}
}

func (w *Worker) requestInfos(keep func(*inflight) bool, safe bool) []any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var its []*inflight
	for _, it := range w.inflight {
		if it.msg != nil && keep(it) {
			its = append(its, it)
		}
	}
	slices.SortFunc(its, func(a, b *inflight) int { return strings.Compare(a.msg.ID, b.msg.ID) })
	out := make([]any, 0, len(its))
	for _, it := range its {
		out = append(out, w.requestInfo(it, safe))
	}
	return out
}

// scheduledInfos is the scheduled command: ETA-held messages, with the timer priority Celery
// uses for them (6).
func (w *Worker) scheduledInfos() []any {
	w.mu.Lock()
	defer w.mu.Unlock()
	var its []*inflight
	for _, it := range w.inflight {
		if it.msg != nil && w.etaHeld(it) {
			its = append(its, it)
		}
	}
	slices.SortFunc(its, func(a, b *inflight) int { return a.msg.ETA.Compare(*b.msg.ETA) })
	out := make([]any, 0, len(its))
	for _, it := range its {
		out = append(out, protocol.PyDict{{Key: "eta", Value: protocol.PyISOFormat(*it.msg.ETA)}, {Key: "priority", Value: 6}, {Key: "request", Value: w.requestInfo(it, false)}})
	}
	return out
}

func (w *Worker) queryTask(ids []any) map[string]any {
	want := map[string]bool{}
	for _, id := range ids {
		if s, ok := id.(string); ok {
			want[s] = true
		}
	}
	out := map[string]any{}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, it := range w.inflight {
		if it.msg == nil || !want[it.msg.ID] {
			continue
		}
		state := "reserved"
		switch {
		case it.state == stActive:
			state = "active"
		case w.etaHeld(it):
			state = "scheduled"
		case it.state == stReleased:
			state = "ready"
		}
		out[it.msg.ID] = []any{state, w.requestInfo(it, false)}
	}
	return out
}

// registeredInfo lists task names, with " [rate_limit=...]" as Celery shows set attributes.
func (w *Worker) registeredInfo() []any {
	names := w.Registered()
	slices.Sort(names)
	c := w.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]any, len(names))
	for i, n := range names {
		out[i] = n
		if b := c.rates[n]; b != nil {
			out[i] = n + " [rate_limit=" + b.text + "]"
		}
	}
	return out
}

func (w *Worker) statsInfo() protocol.PyDict {
	total := map[string]any{}
	w.stats.perTask.Range(func(k, v any) bool {
		total[k.(string)] = v.(interface{ Load() int64 }).Load()
		return true
	})
	c := w.ctl
	c.mu.Lock()
	conc, started := c.conc, c.started
	c.mu.Unlock()
	procs := make([]any, conc)
	for i := range procs {
		procs[i] = w.pid
	}
	active := w.activeCount()
	return protocol.PyDict{
		{Key: "total", Value: total}, {Key: "pid", Value: w.pid}, {Key: "clock", Value: strconv.FormatInt(c.clock.value(), 10)},
		{Key: "uptime", Value: int64(w.now().Sub(started).Round(time.Second) / time.Second)},
		{Key: "pool", Value: protocol.PyDict{
			{Key: "implementation", Value: "celerybridge:goroutines"}, {Key: "max-concurrency", Value: conc}, {Key: "processes", Value: procs},
			{Key: "max-tasks-per-child", Value: "N/A"}, {Key: "put-guarded-by-semaphore", Value: false}, {Key: "timeouts", Value: []any{0, 0}},
			{Key: "writes", Value: protocol.PyDict{{Key: "total", Value: w.stats.processed.Load()}, {Key: "avg", Value: "0.00%"}, {Key: "all", Value: ""}, {Key: "raw", Value: ""},
				{Key: "strategy", Value: nil}, {Key: "inqueues", Value: protocol.PyDict{{Key: "total", Value: conc}, {Key: "active", Value: active}}}}},
		}},
		{Key: "broker", Value: w.brokerInfo()},
		{Key: "prefetch_count", Value: conc * w.cfg.PrefetchMultiplier},
		{Key: "rusage", Value: rusage()},
	}
}

// brokerInfo is the "broker" section of stats (kombu's Connection.info()): the Redis one, or
// what a transport describing itself says (BrokerDescriber).
func (w *Worker) brokerInfo() protocol.PyDict {
	if w.broker == nil {
		if d, ok := w.transport.(BrokerDescriber); ok {
			return d.BrokerInfo()
		}
		return protocol.PyDict{{Key: "transport", Value: nil}}
	}
	keys := w.broker.Keys()
	return protocol.PyDict{
		{Key: "hostname", Value: nil}, {Key: "userid", Value: nil}, {Key: "virtual_host", Value: strconv.Itoa(keys.DB)}, {Key: "port", Value: nil},
		{Key: "insist", Value: false}, {Key: "ssl", Value: false}, {Key: "transport", Value: "redis"}, {Key: "connect_timeout", Value: 4},
		{Key: "transport_options", Value: w.transportOptions()},
		{Key: "login_method", Value: nil}, {Key: "uri_prefix", Value: nil}, {Key: "heartbeat", Value: 120.0},
		{Key: "failover_strategy", Value: "round-robin"}, {Key: "alternates", Value: []any{}},
	}
}

// transportOptions is broker_transport_options as Celery reports it.
func (w *Worker) transportOptions() protocol.PyDict {
	if w.broker == nil {
		return protocol.PyDict{}
	}
	keys := w.broker.Keys()
	return protocol.PyDict{{Key: "visibility_timeout", Value: w.broker.VisibilityTimeout().Seconds()},
		{Key: "global_keyprefix", Value: strOrNil(keys.Prefix)}}
}

// confTransportOptions is broker_transport_options as conf reports it.
func (w *Worker) confTransportOptions() protocol.PyDict {
	if w.broker == nil {
		return protocol.PyDict{}
	}
	return protocol.PyDict{{Key: "visibility_timeout", Value: w.broker.VisibilityTimeout().Seconds()}}
}

// transportName is the broker's kombu transport name ("redis", "amqp").
func (w *Worker) transportName() string {
	for _, it := range w.brokerInfo() {
		if s, ok := it.Value.(string); ok && it.Key == "transport" {
			return s
		}
	}
	return "unknown"
}

// activeQueues is Queue.as_dict(recurse=True) for each queue consumed, as Celery declares its
// default queues: a direct exchange and routing key named after the queue.
func (w *Worker) activeQueues() []any {
	c := w.ctl
	c.mu.Lock()
	qs := append([]string(nil), c.queues...)
	c.mu.Unlock()
	out := make([]any, len(qs))
	for i, q := range qs {
		out[i] = protocol.PyDict{
			{Key: "name", Value: q},
			{Key: "exchange", Value: protocol.PyDict{{Key: "name", Value: q}, {Key: "type", Value: "direct"}, {Key: "arguments", Value: nil}, {Key: "durable", Value: true},
				{Key: "passive", Value: false}, {Key: "auto_delete", Value: false}, {Key: "delivery_mode", Value: nil}, {Key: "no_declare", Value: false}}},
			{Key: "routing_key", Value: q}, {Key: "queue_arguments", Value: nil}, {Key: "binding_arguments", Value: nil},
			{Key: "consumer_arguments", Value: nil}, {Key: "durable", Value: true}, {Key: "exclusive", Value: false}, {Key: "auto_delete", Value: false},
			{Key: "no_ack", Value: false}, {Key: "alias", Value: nil}, {Key: "bindings", Value: []any{}}, {Key: "no_declare", Value: nil}, {Key: "expires", Value: nil},
			{Key: "message_ttl", Value: nil}, {Key: "max_length", Value: nil}, {Key: "max_length_bytes", Value: nil}, {Key: "max_priority", Value: nil},
		}
	}
	return out
}

func (w *Worker) report() string {
	return fmt.Sprintf("software -> celerybridge (Celery wire %s) go:%s\nplatform -> system:%s arch:%s\n"+
		"loader -> celerybridge\nsettings -> transport:%s results:%v\n",
		w.ctl.events.swVer, runtime.Version(), pySystem(), runtime.GOARCH, w.transportName(), w.cfg.Backend != nil)
}

// confInfo is a small subset of the configuration, with Celery's setting names.
func (w *Worker) confInfo() protocol.PyDict {
	c := w.ctl
	c.mu.Lock()
	conc := c.conc
	c.mu.Unlock()
	return protocol.PyDict{
		{Key: "broker_transport_options", Value: w.confTransportOptions()},
		{Key: "task_acks_late", Value: !w.cfg.AcksEarly}, {Key: "task_track_started", Value: w.cfg.TrackStarted},
		{Key: "task_default_queue", Value: DefaultQueue}, {Key: "worker_concurrency", Value: conc},
		{Key: "worker_prefetch_multiplier", Value: w.cfg.PrefetchMultiplier},
		{Key: "worker_send_task_events", Value: c.events.taskOn.Load()},
		{Key: "accept_content", Value: []any{"json"}},
	}
}

// hello answers mingle: the revoked ids and the clock; nothing to our own hello.
func (w *Worker) hello(a map[string]any) any {
	if from, _ := a["from_node"].(string); from == w.cfg.Hostname {
		return nil
	}
	if r := a["revoked"]; r != nil {
		w.ctl.revoked.merge(r)
	}
	return protocol.PyDict{{Key: "revoked", Value: stringsAny(w.ctl.revoked.list())}, {Key: "clock", Value: w.ctl.clock.forward()}}
}

// parseRate is celery.utils.time.rate: "10/s", "100/m", "1/h" or a number per second; "" or 0
// disables the limit.
func parseRate(v any) (float64, error) {
	switch x := v.(type) {
	case nil:
		return 0, nil
	case string:
		if x == "" {
			return 0, nil
		}
		ops, mod, _ := strings.Cut(x, "/")
		n, err := strconv.ParseFloat(strings.TrimSpace(ops), 64)
		if err != nil {
			return 0, pyError(fmt.Sprintf("ValueError(\"could not convert string to float: %s\")", protocol.PyReprFull(ops)))
		}
		switch mod {
		case "", "s":
			return n, nil
		case "m":
			return n / 60, nil
		case "h":
			return n / 3600, nil
		}
		return 0, pyError("KeyError(" + protocol.PyReprFull(mod) + ")")
	}
	if f, ok := numberOption(v); ok {
		return f, nil
	}
	return 0, pyError(fmt.Sprintf("WantType(%s)", protocol.PyReprFull(fmt.Sprintf("bad rate limit %v", v))))
}

// SetRateLimit limits how often task runs on this worker, as Celery's rate_limit command does:
// "10/s", "100/m", "1/h" or a number per second; "" removes the limit. Waiting messages are held
// (not occupying an executor) until their turn.
func (w *Worker) SetRateLimit(task, rate string) error {
	reply, _ := w.rateLimitCommand(map[string]any{"task_name": task, "rate_limit": rate})
	if e, bad := reply.(map[string]any)["error"]; bad {
		return fmt.Errorf("%w: rate limit %q for task %s: %v", ErrInvalidConfig, rate, task, e)
	}
	return nil
}

func (w *Worker) rateLimitCommand(a map[string]any) (any, error) {
	task, _ := a["task_name"].(string)
	r, err := parseRate(a["rate_limit"])
	if err != nil {
		return nok("Invalid rate limit string: " + err.Error()), nil
	}
	if _, _, known := w.lookup(task); !known {
		w.log.Error("rate limit attempt for unknown task", "task", task)
		return nok("unknown task"), nil
	}
	c := w.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	if r <= 0 {
		delete(c.rates, task)
		return ok("rate limit disabled successfully"), nil
	}
	if c.rates == nil {
		c.rates = map[string]*tokenBucket{}
	}
	text, isStr := a["rate_limit"].(string)
	if !isStr {
		text = strconv.FormatFloat(r, 'f', -1, 64)
	}
	c.rates[task] = &tokenBucket{text: text, rate: r, tokens: 1, last: w.now()}
	w.log.Info("new rate limit", "task", task, "rate", text)
	return ok("new rate limit set successfully"), nil
}

func (w *Worker) timeLimitCommand(a map[string]any) (any, error) {
	task, _ := a["task_name"].(string)
	if _, _, known := w.lookup(task); !known {
		w.log.Error("change time limit attempt for unknown task", "task", task)
		return nok("unknown task"), nil
	}
	secs := func(v any) *time.Duration {
		f, ok := numberOption(v)
		if s, isStr := v.(string); isStr {
			var err error
			f, err = strconv.ParseFloat(s, 64)
			ok = err == nil
		}
		if !ok || f <= 0 {
			return nil
		}
		d := time.Duration(f * float64(time.Second))
		return &d
	}
	c := w.ctl
	c.mu.Lock()
	if c.limits == nil {
		c.limits = map[string]limitOverride{}
	}
	c.limits[task] = limitOverride{hard: secs(a["hard"]), soft: secs(a["soft"])}
	c.mu.Unlock()
	return ok("time limits set successfully"), nil
}

func (w *Worker) addConsumer(ctx context.Context, a map[string]any) (any, error) {
	q, _ := a["queue"].(string)
	if q == "" {
		return nil, pyError("WantType(\"add_consumer() missing 1 required positional argument: 'queue'\")")
	}
	if err := w.declareQueue(ctx, q); err != nil {
		return nil, pyError("OperationalError(" + protocol.PyReprFull(err.Error()) + ")")
	}
	if err := w.setQueue(ctx, q, true); err != nil {
		return nil, pyError("OperationalError(" + protocol.PyReprFull(err.Error()) + ")")
	}
	return ok("add consumer " + q), nil
}

// declareQueue writes the queue's bindings as Broker.DeclareQueue does (kombu's declaration of
// a direct queue named after itself, in both binding tables), within ctx.
func (w *Worker) declareQueue(ctx context.Context, q string) error {
	if w.broker == nil {
		return nil // other transports declare a queue when they start consuming it
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := w.broker.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := rdb.DeclareQueue(ctx, c, w.broker.Keys(), q); err != nil {
		return fmt.Errorf("%w: declare queue %s: %w", ErrBroker, q, err)
	}
	return nil
}

// setQueue adds or removes a consumed queue at runtime. Removing one returns once the consumer
// takes nothing more from it: Celery consumes nothing more from a queue once cancel_consumer has
// replied.
func (w *Worker) setQueue(ctx context.Context, q string, add bool) error {
	if q == "" {
		return nil
	}
	c := w.ctl
	c.mu.Lock()
	if i := slices.Index(c.queues, q); add && i < 0 {
		c.queues = append(c.queues, q)
	} else if !add && i >= 0 {
		c.queues = slices.Delete(c.queues, i, i+1)
	}
	queues := slices.Clone(c.queues)
	c.mu.Unlock()
	w.mu.Lock()
	cons := w.cons
	w.mu.Unlock()
	if cons == nil {
		return nil
	}
	return cons.SetQueues(ctx, queues)
}

// poolResize grows (n > 0) or shrinks (n < 0) the executors and the prefetch window with them.
func (w *Worker) poolResize(n int) (any, error) {
	c := w.ctl
	mult := w.cfg.PrefetchMultiplier
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case <-w.stop:
		return nil, pyError("RuntimeError('worker is shutting down')")
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.spawn == nil {
		return nil, pyError("RuntimeError('worker is not running')")
	}
	stop := w.stop
	switch {
	case n > 0:
		if c.conc+n > c.maxConc {
			return nil, pyError(fmt.Sprintf("ValueError('cannot grow the pool past MaxConcurrency %d')", c.maxConc))
		}
		for range n {
			c.spawn() // under w.mu before stop closes: Run's drain waits for these too
		}
		c.conc += n
		go func() { // open the prefetch window: its channel holds the spare capacity as tokens
			for range n * mult {
				select {
				case <-w.slots:
				case <-stop:
					return
				}
			}
		}()
		return ok("pool will grow"), nil
	case n < 0:
		if c.conc+n < 1 {
			return nil, pyError("ValueError(\"Can't shrink pool below one executor\")")
		}
		c.conc += n
		for range -n {
			c.shrink <- struct{}{}
		}
		go func() { // retake the slots as they come free
			for range -n * mult {
				select {
				case w.slots <- struct{}{}:
				case <-stop:
					return
				}
			}
		}()
		return ok("pool will shrink"), nil
	}
	return ok("pool unchanged"), nil
}
