package celerycompat

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Celery's limits on a worker's revoked-id set (celery/worker/state.py REVOKES_MAX and
// REVOKE_EXPIRES; env-configurable from Celery 5.3 as CELERY_WORKER_REVOKES_MAX and
// CELERY_WORKER_REVOKE_EXPIRES).
const (
	DefaultRevokesMax    = 50000
	DefaultRevokeExpires = 10800 * time.Second
)

// TerminatedError is the cause of a handler's context cancellation when its task is revoked
// with terminate=True (context.Cause(ctx) gives it). Python kills the pool process with the
// signal; a Go handler is asked to stop through its context instead, and the worker does not wait
// for it: the task is stored REVOKED with reason "terminated" at once.
type TerminatedError struct {
	TaskID string
	Signal string // e.g. "SIGTERM"
	Signum int    // e.g. 15
}

func (e *TerminatedError) Error() string {
	return fmt.Sprintf("celerycompat: task %s terminated by remote control (%s)", e.TaskID, e.Signal)
}

// revokedSet is Celery's LimitedSet of revoked task ids: at most max ids, each kept for expires
// after it was (last) added; the oldest go first. Safe for concurrent use.
type revokedSet struct {
	mu      sync.Mutex
	max     int
	expires time.Duration
	now     func() time.Time
	at      map[string]time.Time
	order   []revokedEntry // insertion order; entries superseded by a later add are skipped
	head    int
	// stamps are revoke_by_stamped_headers' revoked stamps: header -> set of PyRepr(value).
	stamps map[string]map[string]bool
}

type revokedEntry struct {
	id string
	at time.Time
}

func newRevokedSet(max int, expires time.Duration, now func() time.Time) *revokedSet {
	if max <= 0 {
		max = DefaultRevokesMax
	}
	if expires <= 0 {
		expires = DefaultRevokeExpires
	}
	return &revokedSet{max: max, expires: expires, now: now, at: map[string]time.Time{}}
}

// add records ids as revoked now.
func (s *revokedSet) add(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, id := range ids {
		if id == "" {
			continue
		}
		s.at[id] = now
		s.order = append(s.order, revokedEntry{id, now})
	}
	s.purge(now)
}

// purge drops expired ids and, past max, the oldest ones. The caller holds mu.
func (s *revokedSet) purge(now time.Time) {
	for s.head < len(s.order) {
		e := s.order[s.head]
		cur, ok := s.at[e.id]
		switch {
		case !ok || !cur.Equal(e.at): // superseded or already gone
		case now.Sub(e.at) >= s.expires || len(s.at) > s.max:
			delete(s.at, e.id)
		default:
			s.compact()
			return
		}
		s.order[s.head] = revokedEntry{}
		s.head++
	}
	s.compact()
}

// compact reclaims the consumed front of order and, when ids were re-added many times, the
// superseded entries. The caller holds mu.
func (s *revokedSet) compact() {
	live := s.order[s.head:]
	switch {
	case len(live) > 2*len(s.at)+1024:
		kept := make([]revokedEntry, 0, len(s.at))
		for _, e := range live {
			if cur, ok := s.at[e.id]; ok && cur.Equal(e.at) {
				kept = append(kept, e)
			}
		}
		s.order, s.head = kept, 0
	case s.head > 1024 && s.head > len(s.order)/2:
		s.order, s.head = append(s.order[:0:0], live...), 0
	}
}

// contains reports whether id is revoked (and not expired).
func (s *revokedSet) contains(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.at[id]
	return ok && s.now().Sub(t) < s.expires
}

// list returns the revoked ids, oldest first.
func (s *revokedSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purge(s.now())
	out := make([]string, 0, len(s.at))
	for _, e := range s.order[s.head:] {
		if cur, ok := s.at[e.id]; ok && cur.Equal(e.at) {
			out = append(out, e.id)
		}
	}
	return out
}

// merge adds ids received from another worker (mingle hello): a list of ids (Celery >= 5.3,
// and what we send) or Celery 5.2's {id: [timestamp, id]} mapping, whose stamps are ignored
// because they come from another host's monotonic clock (as Celery 5.3+ does).
func (s *revokedSet) merge(v any) {
	switch x := v.(type) {
	case []any:
		ids := make([]string, 0, len(x))
		for _, e := range x {
			if id, ok := e.(string); ok {
				ids = append(ids, id)
			}
		}
		s.add(ids...)
	case map[string]any:
		ids := make([]string, 0, len(x))
		for id := range x {
			ids = append(ids, id)
		}
		s.add(ids...)
	}
}

// addStamps records revoke_by_stamped_headers arguments: {header: value or [values]}.
func (s *revokedSet) addStamps(headers map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stamps == nil {
		s.stamps = map[string]map[string]bool{}
	}
	for h, v := range headers {
		set := s.stamps[h]
		if set == nil {
			set = map[string]bool{}
			s.stamps[h] = set
		}
		for _, e := range maybeList(v) {
			set[protocol.PyReprFull(e)] = true
		}
	}
}

// stampRevoked reports whether one of m's stamps matches a revoked stamp.
func (s *revokedSet) stampRevoked(m *Message) bool {
	if len(m.Stamps) == 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return stampsMatch(s.stamps, m.Stamps)
}

func stampsMatch(revoked map[string]map[string]bool, stamps map[string]any) bool {
	for h, v := range stamps {
		set := revoked[h]
		if set == nil {
			continue
		}
		for _, e := range maybeList(v) {
			if set[protocol.PyReprFull(e)] {
				return true
			}
		}
	}
	return false
}

// maybeList is Celery's maybe_list: a list stays, anything else becomes a one-element list.
func maybeList(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		return x
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out
	}
	return []any{v}
}

// signals maps the Linux signal names Celery's revoke accepts to their numbers.
var signalNumbers = map[string]int{
	"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6, "SIGBUS": 7,
	"SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12, "SIGPIPE": 13,
	"SIGALRM": 14, "SIGTERM": 15,
}

// signum is celery.platforms.signals.signum: "TERM", "SIGTERM" or a number; "" means SIGTERM.
func signum(v any) (name string, num int, err error) {
	switch x := v.(type) {
	case nil:
		return "SIGTERM", 15, nil
	case string:
		if x == "" {
			return "SIGTERM", 15, nil
		}
		if n, err := strconv.Atoi(x); err == nil {
			return signalName(n), n, nil
		}
		if strings.ToUpper(x) != x {
			return "", 0, fmt.Errorf("WantType('signal name must be uppercase string.')")
		}
		if !strings.HasPrefix(x, "SIG") {
			x = "SIG" + x
		}
		n, ok := signalNumbers[x]
		if !ok {
			return "", 0, fmt.Errorf("AttributeError(\"module 'signal' has no attribute '%s'\")", x)
		}
		return x, n, nil
	default:
		if f, ok := numberOption(v); ok {
			return signalName(int(f)), int(f), nil
		}
	}
	return "", 0, fmt.Errorf("WantType('signal name must be uppercase string.')")
}

func signalName(n int) string {
	for k, v := range signalNumbers {
		if v == n {
			return k
		}
	}
	return strconv.Itoa(n)
}

// revokeCommand is Celery 5.7's revoke: record the ids; discard the copies this worker holds
// (prefetched or ETA-held) as REVOKED at once; with terminate, stop the running ones; store
// REVOKED for ids held nowhere here whose result is still PENDING, RECEIVED, RETRY or REJECTED.
func (w *Worker) revokeCommand(ctx context.Context, raw []any, terminate bool, signal any) (any, error) {
	ids := make([]string, 0, len(raw))
	seen := map[string]bool{}
	for _, v := range raw {
		if id, ok := v.(string); ok && id != "" && !seen[id] {
			ids, seen[id] = append(ids, id), true
		}
	}
	var sig string
	var num int
	if terminate {
		var err error
		if sig, num, err = signum(signal); err != nil {
			return nil, pyError(err.Error())
		}
	}
	w.ctl.revoked.add(ids...)

	var waiting []*inflight
	found := map[string]bool{}
	var terminated []string
	w.mu.Lock()
	for _, it := range w.inflight {
		if it.msg == nil || !seen[it.msg.ID] {
			continue
		}
		found[it.msg.ID] = true
		switch it.state {
		case stReserved, stScheduled:
			if it.timer != nil {
				it.timer.Stop()
			}
			it.state = stReleased // no executor, timer or drain takes it now
			waiting = append(waiting, it)
		case stActive:
			if terminate {
				w.terminateActive(it, &TerminatedError{TaskID: it.msg.ID, Signal: sig, Signum: num})
			}
		}
		if terminate && !slices.Contains(terminated, it.msg.ID) {
			terminated = append(terminated, it.msg.ID)
		}
	}
	w.mu.Unlock()
	for _, it := range waiting {
		w.revoke(ctx, it, RevokedReasonRevoked)
	}
	if b := w.cfg.Backend; b != nil {
		for _, id := range ids {
			if found[id] {
				continue
			}
			meta, err := b.GetMeta(ctx, id)
			if err != nil {
				w.log.Warn("could not read a revoked task's state", "task_id", id, "error", err)
				continue
			}
			switch meta.Status {
			case StatePending, StateReceived, StateRetry, StateRejected:
				if _, err := storeMark(ctx, b, nil, revokedMeta(id, RevokedReasonRevoked), nil); err != nil {
					w.log.Warn("could not store REVOKED", "task_id", id, "error", err)
				}
			}
		}
	}
	if terminate {
		if len(terminated) == 0 {
			return ok("terminate: tasks unknown"), nil
		}
		return ok("terminate: " + strings.Join(terminated, ", ")), nil
	}
	w.log.Info("tasks flagged as revoked", "task_ids", ids)
	return ok("tasks " + pySetRepr(ids) + " flagged as revoked"), nil
}

// pySetRepr renders ids as Python's repr of a set of strings: {'a', 'b'}; set() when empty.
func pySetRepr(ids []string) string {
	if len(ids) == 0 {
		return "set()"
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = protocol.PyReprFull(id)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// revokeStamped is revoke_by_stamped_headers (Celery 5.3+): messages whose stamps match are
// discarded as revoked; with terminate, matching running tasks are stopped.
func (w *Worker) revokeStamped(ctx context.Context, a map[string]any) (any, error) {
	headers := map[string]any{}
	switch h := a["headers"].(type) {
	case map[string]any:
		headers = h
	case []any: // ["key=value", ...] from the command line
		for _, e := range h {
			if s, ok := e.(string); ok {
				k, v, _ := strings.Cut(s, "=")
				headers[k] = v
			}
		}
	}
	terminate, _ := a["terminate"].(bool)
	sig, num, err := signum(a["signal"])
	if err != nil {
		return nil, pyError(err.Error())
	}
	w.ctl.revoked.addStamps(headers)
	revokedStamps := map[string]map[string]bool{}
	for k, v := range headers {
		revokedStamps[k] = map[string]bool{}
		for _, e := range maybeList(v) {
			revokedStamps[k][protocol.PyReprFull(e)] = true
		}
	}
	matches := func(it *inflight) bool { return stampsMatch(revokedStamps, it.msg.Stamps) }
	var waiting []*inflight
	stopped := 0
	w.mu.Lock()
	for _, it := range w.inflight {
		if it.msg == nil || !matches(it) {
			continue
		}
		switch it.state {
		case stReserved, stScheduled:
			if it.timer != nil {
				it.timer.Stop()
			}
			it.state = stReleased
			waiting = append(waiting, it)
		case stActive:
			if terminate {
				w.terminateActive(it, &TerminatedError{TaskID: it.msg.ID, Signal: sig, Signum: num})
				stopped++
			}
		}
	}
	w.mu.Unlock()
	for _, it := range waiting {
		w.revoke(ctx, it, RevokedReasonRevoked)
	}
	if !terminate {
		return ok("headers " + protocol.PyReprFull(headers) + " flagged as revoked, but not terminated"), nil
	}
	if stopped == 0 {
		return ok("headers " + protocol.PyReprFull(headers) + " were not terminated"), nil
	}
	return ok("headers " + protocol.PyReprFull(headers) + " revoked"), nil
}

// terminateActive cancels a running task's context with te, or, when the task is starting and
// has no context yet, leaves te for run to apply. The caller holds w.mu.
func (w *Worker) terminateActive(it *inflight, te *TerminatedError) {
	if it.cancel != nil {
		it.cancel(te)
		return
	}
	c := w.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.terminate == nil {
		c.terminate = map[string]*TerminatedError{}
	}
	c.terminate[it.msg.ID] = te
}
