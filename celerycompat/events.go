package celerycompat

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Celery events (celery/events/dispatcher.py): every event goes to the topic exchange celeryev
// with its type as routing key ("worker.heartbeat"; task events batched as "task.multi"), where
// Flower and `celery events` read them. A Fanout carries them (on Redis, PUBLISHed on the
// channel "/<db>.celeryev/<routing key>" inside a kombu envelope).

const (
	eventsExchange = "celeryev"
	// DefaultHeartbeatInterval is Celery's worker heartbeat frequency (freq 2.0): a worker is
	// online for monitors while its last heartbeat is younger than twice this.
	DefaultHeartbeatInterval = 2 * time.Second
	// SoftwareIdent is the sw_ident of our worker events. Celery's own workers send "py-celery";
	// neither Flower nor celery.events.state reads it, so a Go worker says what it is.
	SoftwareIdent = "celerybridge"

	eventQueueSize  = 8192 // events waiting to be published; more are dropped (and counted)
	eventBatchLimit = 64   // task events per task.multi array
	eventFlushLimit = 1024 // events per pipeline
	// eventLinger is how long the dispatcher gathers events before publishing them.
	eventLinger = 20 * time.Millisecond
)

// event is one event waiting to be published. Clock and timestamp are taken when it is sent,
// as Celery's dispatcher does, so that the order survives batching.
type event struct {
	typ   string
	task  bool // task-* events are batched into task.multi arrays, as a Celery worker does
	kind  eventKind
	clock int64
	ts    time.Time
	// fields are the event's own fields (evFields); the commonest task events carry what they
	// need instead and are written without building a dict.
	fields  protocol.PyDict
	msg     *Message
	result  any
	runtime float64
}

type eventKind uint8

const (
	evFields    eventKind = iota
	evReceived            // msg
	evStarted             // msg
	evSucceeded           // msg, result, runtime
)

// eventDispatcher publishes a worker's events from one background goroutine, batching them into
// pipelines so that task events cost the task path only a channel send. Safe for concurrent use;
// start and close are called by Run only, close after every sender has stopped.
type eventDispatcher struct {
	fanout   Fanout
	hostname string
	pid      int
	clock    *lamportClock
	now      func() time.Time
	log      *slog.Logger
	markers  bool
	swVer    string

	taskOn   atomic.Bool // task events (Celery's "task" group: -E, enable_events)
	workerOn bool        // worker-online/heartbeat/offline (off with WithoutHeartbeat)
	running  atomic.Bool

	queue   chan *event
	dropped atomic.Int64
	body    []byte // encoding buffer of the publishing goroutine
	stop    chan struct{}
	done    chan struct{}
	outage  outageLog
}

func newEventDispatcher(w *Worker, clock *lamportClock) *eventDispatcher {
	d := &eventDispatcher{
		fanout: w.fanout, hostname: w.cfg.Hostname, pid: w.pid, clock: clock, now: w.now, log: w.log,
		markers:  w.transport.Codec().PeerVersion.AtLeast(Celery53),
		swVer:    w.transport.Codec().PeerVersion.String(),
		workerOn: !w.cfg.WithoutHeartbeat,
		queue:    make(chan *event, eventQueueSize),
		stop:     make(chan struct{}), done: make(chan struct{}),
	}
	if w.transport.Codec().PeerVersion.IsZero() {
		d.swVer = Celery52.String()
	}
	d.taskOn.Store(w.cfg.SendEvents)
	d.outage.log = w.log
	return d
}

// start runs the publishing goroutine.
func (d *eventDispatcher) start() {
	d.running.Store(true)
	go d.run()
}

// close publishes what is queued and stops the goroutine.
func (d *eventDispatcher) close() {
	if !d.running.Load() {
		return
	}
	close(d.stop)
	<-d.done
}

// sendTask queues a task event when task events are on.
func (d *eventDispatcher) sendTask(typ string, fields protocol.PyDict) {
	if d.taskOn.Load() {
		d.enqueue(&event{typ: typ, task: true, fields: fields})
	}
}

// sendWorker queues a worker event (online, heartbeat, offline) unless heartbeats are off.
func (d *eventDispatcher) sendWorker(typ string, fields protocol.PyDict) {
	if d.workerOn {
		d.enqueue(&event{typ: typ, fields: fields})
	}
}

func (d *eventDispatcher) enqueue(e *event) {
	if !d.running.Load() {
		return
	}
	e.clock, e.ts = d.clock.forward(), d.now()
	select {
	case d.queue <- e:
	default:
		d.dropped.Add(1)
	}
}

func (d *eventDispatcher) run() {
	defer close(d.done)
	batch := make([]*event, 0, 64)
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		// Wait for a first event, then gather more for up to eventLinger (as Celery's worker
		// buffers task events and flushes them together), so that a busy worker publishes a few
		// task.multi arrays per pipeline instead of one PUBLISH per event.
		select {
		case e := <-d.queue:
			batch = append(batch, e)
		case <-d.stop:
			d.drain(batch)
			return
		}
		linger.Reset(eventLinger)
	gather:
		for len(batch) < eventFlushLimit {
			select {
			case e := <-d.queue:
				batch = append(batch, e)
			case <-linger.C:
				break gather
			case <-d.stop:
				linger.Stop()
				d.drain(batch)
				return
			}
		}
		linger.Stop()
		d.publish(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// drain publishes batch and everything still queued (at close).
func (d *eventDispatcher) drain(batch []*event) {
	for {
		select {
		case e := <-d.queue:
			batch = append(batch, e)
			if len(batch) < eventFlushLimit {
				continue
			}
			d.publish(batch)
			batch = batch[:0]
			continue
		default:
		}
		break
	}
	d.publish(batch)
}

// publish sends a batch in one pipeline: runs of task events as task.multi arrays, worker events
// one by one on their own routing key. Events of a batch that cannot be published are dropped
// (events are for monitoring; a Redis outage is logged once).
func (d *eventDispatcher) publish(batch []*event) {
	if n := d.dropped.Swap(0); n > 0 {
		d.log.Warn("event queue full; events dropped", "count", n)
	}
	if len(batch) == 0 {
		return
	}
	type msg struct {
		rk         string
		start, end int // in d.body
	}
	var msgs []msg
	head := d.eventHead()
	d.body = d.body[:0]
	for i := 0; i < len(batch); {
		start := len(d.body)
		if !batch[i].task {
			if b, err := d.appendEvent(d.body, batch[i], head, 0); err == nil {
				d.body = b
				msgs = append(msgs, msg{strings.ReplaceAll(batch[i].typ, "-", "."), start, len(d.body)})
			}
			i++
			continue
		}
		d.body = append(d.body, '[')
		n := 0
		for ; i < len(batch) && batch[i].task && n < eventBatchLimit; i++ {
			mark := len(d.body)
			if n > 0 {
				d.body = append(d.body, ", "...)
			}
			b, err := d.appendEvent(d.body, batch[i], head, 1)
			if err != nil {
				d.body = d.body[:mark] // an unencodable field drops that event only
				continue
			}
			d.body = b
			n++
		}
		if n > 0 {
			d.body = append(d.body, ']')
			msgs = append(msgs, msg{"task.multi", start, len(d.body)})
		} else {
			d.body = d.body[:start]
		}
	}
	headers := protocol.PyDict{{Key: "hostname", Value: d.hostname}}
	out := make([]*FanoutMessage, len(msgs))
	for i, m := range msgs {
		out[i] = &FanoutMessage{Exchange: eventsExchange, RoutingKey: m.rk, Headers: headers,
			Body: d.body[m.start:m.end], DeliveryMode: 1, Markers: d.markers}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.fanout.PublishEvents(ctx, out); err != nil {
		d.outage.fail("publish events", err)
		return
	}
	d.outage.ok()
}

// eventHead is what every event starts with, as Celery's Event() lays it out: hostname,
// utcoffset, pid, then the clock.
func (d *eventDispatcher) eventHead() []byte {
	b := append([]byte(`{"hostname": `), protocol.AppendPyString(nil, d.hostname)...)
	b = append(b, `, "utcoffset": `...)
	b = strconv.AppendInt(b, int64(utcOffset(d.now().Local())), 10)
	b = append(b, `, "pid": `...)
	b = strconv.AppendInt(b, int64(d.pid), 10)
	return append(b, `, "clock": `...)
}

// appendEvent writes one event: head, clock, the event's own fields, timestamp, type.
func (d *eventDispatcher) appendEvent(b []byte, e *event, head []byte, depth int) ([]byte, error) {
	b = append(b, head...)
	b = strconv.AppendInt(b, e.clock, 10)
	field := func(k string) { b = append(append(append(b, `, "`...), k...), `": `...) }
	str := func(k, v string) { field(k); b = protocol.AppendPyString(b, v) }
	strOrNull := func(k, v string) {
		if v == "" {
			field(k)
			b = append(b, "null"...)
			return
		}
		str(k, v)
	}
	timeOrNull := func(k string, t *time.Time) {
		field(k)
		if t == nil {
			b = append(b, "null"...)
			return
		}
		b = append(protocol.AppendPyISO(append(b, '"'), *t), '"')
	}
	switch e.kind {
	case evReceived:
		m := e.msg
		str("uuid", m.ID)
		str("name", m.Task)
		str("args", argsReprOf(m))
		str("kwargs", kwargsReprOf(m))
		strOrNull("root_id", m.RootID)
		strOrNull("parent_id", m.ParentID)
		field("retries")
		b = strconv.AppendInt(b, int64(m.Retries), 10)
		timeOrNull("eta", m.ETA)
		timeOrNull("expires", m.Expires)
	case evStarted:
		str("uuid", e.msg.ID)
	case evSucceeded:
		str("uuid", e.msg.ID)
		str("result", protocol.PyRepr(e.result))
		field("runtime")
		b = protocol.AppendPyFloat(b, e.runtime, 64)
	default:
		for _, it := range e.fields {
			field(it.Key)
			var err error
			if b, err = protocol.AppendJSON(b, it.Value, depth+1, d.markers); err != nil {
				return nil, err
			}
		}
	}
	field("timestamp")
	b = protocol.AppendPyFloat(b, unixFloat(e.ts), 64)
	str("type", e.typ)
	return append(b, '}'), nil
}

// utcOffset is Celery's utcoffset(): time.timezone // 3600 (altzone under DST), that is the
// offset of t's zone in hours WEST of UTC, floored: UTC+2 gives -2, UTC-5 gives 5, UTC+5:30
// gives -6. Events use the local zone, as Python does.
func utcOffset(t time.Time) int {
	_, east := t.Zone()
	west := -east
	q := west / 3600
	if west%3600 != 0 && west < 0 {
		q--
	}
	return q
}

func unixFloat(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// workerFields are the fields of worker-online, -heartbeat and -offline (celery/worker/heartbeat.py).
func (w *Worker) workerFields(freq time.Duration) protocol.PyDict {
	return protocol.PyDict{
		{Key: "freq", Value: freq.Seconds()}, {Key: "active", Value: w.activeCount()}, {Key: "processed", Value: w.stats.processed.Load()},
		{Key: "loadavg", Value: loadAvg()}, {Key: "sw_ident", Value: SoftwareIdent}, {Key: "sw_ver", Value: w.ctl.events.swVer},
		{Key: "sw_sys", Value: pySystem()},
	}
}

// loadAvg reads /proc/loadavg as Celery's heartbeat does (os.getloadavg rounded to 2 places);
// zeros where it is not available.
func loadAvg() []any {
	out := []any{0.0, 0.0, 0.0}
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(raw)) {
		if i == 3 {
			break
		}
		if v, err := strconv.ParseFloat(f, 64); err == nil {
			out[i] = math.Round(v*100) / 100
		}
	}
	return out
}

// pySystem is Python's platform.system() for the running OS.
func pySystem() string {
	switch runtime.GOOS {
	case "linux":
		return "Linux"
	case "darwin":
		return "Darwin"
	case "windows":
		return "Windows"
	case "freebsd":
		return "FreeBSD"
	}
	return runtime.GOOS
}

// heartbeatLoop sends worker-online, a worker-heartbeat every interval, and worker-offline when
// stop closes.
func (w *Worker) heartbeatLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ev, freq := w.ctl.events, w.ctl.heartbeat
	ev.sendWorker("worker-online", w.workerFields(freq))
	t := time.NewTicker(freq)
	defer t.Stop()
	for {
		select {
		case <-stop:
			ev.sendWorker("worker-offline", w.workerFields(freq))
			return
		case <-t.C:
			ev.sendWorker("worker-heartbeat", w.workerFields(freq))
		}
	}
}

// Task events, sent from the points where Celery's worker sends them (strategy.py, request.py).

func (w *Worker) eventReceived(it *inflight) {
	ev := w.ctl.events
	if !ev.taskOn.Load() {
		return
	}
	ev.enqueue(&event{typ: "task-received", task: true, kind: evReceived, msg: it.msg})
}

func (w *Worker) eventStarted(it *inflight) {
	if w.ctl.events.taskOn.Load() {
		w.ctl.events.enqueue(&event{typ: "task-started", task: true, kind: evStarted, msg: it.msg})
	}
}

func (w *Worker) eventSucceeded(it *inflight, result any) {
	ev := w.ctl.events
	if !ev.taskOn.Load() {
		return
	}
	ev.enqueue(&event{typ: "task-succeeded", task: true, kind: evSucceeded, msg: it.msg, result: result,
		runtime: w.now().Sub(it.started).Seconds()})
}

// eventFailed sends task-failed (or task-retried); a nil te is the unknown-task variant, which
// carries the exception only.
func (w *Worker) eventFailed(typ string, it *inflight, te *TaskError, traceback string) {
	ev := w.ctl.events
	if !ev.taskOn.Load() {
		return
	}
	if te == nil {
		ev.sendTask(typ, protocol.PyDict{{Key: "uuid", Value: it.msg.ID}, {Key: "exception", Value: "NotRegistered(" + protocol.PyReprFull(it.msg.Task) + ")"}})
		return
	}
	ev.sendTask(typ, protocol.PyDict{{Key: "uuid", Value: it.msg.ID}, {Key: "exception", Value: excRepr(te)}, {Key: "traceback", Value: traceback}})
}

func (w *Worker) eventRevoked(it *inflight, terminated bool, signum *int, expired bool) {
	ev := w.ctl.events
	if !ev.taskOn.Load() {
		return
	}
	var sig any
	if signum != nil {
		sig = *signum
	}
	ev.sendTask("task-revoked", protocol.PyDict{{Key: "uuid", Value: it.msg.ID}, {Key: "terminated", Value: terminated}, {Key: "signum", Value: sig}, {Key: "expired", Value: expired}})
}

func (w *Worker) eventRejected(id string, requeue bool) {
	if w.ctl.events.taskOn.Load() && id != "" {
		w.ctl.events.sendTask("task-rejected", protocol.PyDict{{Key: "uuid", Value: id}, {Key: "requeue", Value: requeue}})
	}
}

// excRepr renders a task error as Python's repr of the exception: "MyError('boom')".
func excRepr(te *TaskError) string {
	var b strings.Builder
	b.WriteString(te.ExcType)
	b.WriteByte('(')
	for i, a := range te.ExcMessage {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(protocol.PyReprFull(a))
	}
	b.WriteByte(')')
	return protocol.TruncRepr(b.String())
}

func argsReprOf(m *Message) string {
	if m.ArgsRepr != "" {
		return m.ArgsRepr
	}
	return protocol.ArgsRepr(m.Args)
}

func kwargsReprOf(m *Message) string {
	if m.KwargsRepr != "" {
		return m.KwargsRepr
	}
	if m.Kwargs == nil {
		return "{}"
	}
	return protocol.PyRepr(m.Kwargs)
}
