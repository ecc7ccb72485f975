package rdb

import (
	"strconv"
	"strings"
)

// Sep is kombu's separator between a queue name and its priority step, and between the three
// parts of a _kombu.binding.* member: the two bytes 0x06 0x16.
const Sep = "\x06\x16"

// PrioritySteps are kombu's default priority_steps. A message priority p (clamped to 0..9) goes to
// the largest step <= p; step 0 is the bare queue list. Lower numbers are served first.
var PrioritySteps = [...]int{0, 3, 6, 9}

// Keys builds every Redis key and channel name kombu and Celery use, with the broker's
// global_keyprefix and the result backend's prefix applied. The zero value gives kombu's defaults
// for database 0 with no prefix. Keys is a value; it is safe for concurrent use.
type Keys struct {
	// Prefix is the broker transport option global_keyprefix, prepended verbatim to every
	// broker key and fanout channel (values such as binding members are not prefixed).
	Prefix string
	// ResultPrefix is result_backend_transport_options.global_keyprefix (Celery >= 5.3). An "_"
	// is added unless it already ends in one of ":_-.".
	ResultPrefix string
	// DB is the broker database number, part of fanout channel names ("/0.celeryev/...").
	DB int
}

// Queue returns the list holding priority step step of queue (step 0: the bare name).
func (k Keys) Queue(queue string, step int) string {
	if step == 0 {
		return k.Prefix + queue
	}
	return k.Prefix + queue + Sep + strconv.Itoa(step)
}

// PriorityStep maps a message priority to kombu's step: clamp to 0..9, then the largest step <= p.
func PriorityStep(priority int) int {
	step := 0
	for _, s := range PrioritySteps {
		if priority >= s {
			step = s
		}
	}
	return step
}

// QueueOf strips the prefix and priority suffix from a list key, giving the queue name.
func (k Keys) QueueOf(list string) string {
	list = strings.TrimPrefix(list, k.Prefix)
	if i := strings.LastIndex(list, Sep); i >= 0 {
		if _, err := strconv.Atoi(list[i+len(Sep):]); err == nil {
			return list[:i]
		}
	}
	return list
}

// Binding is the set _kombu.binding.<exchange> listing the queues bound to exchange.
func (k Keys) Binding(exchange string) string { return k.Prefix + "_kombu.binding." + exchange }

// PermanentBinding is the set kombu >= 5.7 writes beside Binding for queues without x-expires;
// its presence keeps kombu's binding sweep from ever deleting the binding table.
func (k Keys) PermanentBinding(exchange string) string {
	return k.Prefix + "_kombu.binding_permanent." + exchange
}

// BindingMember is one member of a binding set: routing_key, pattern and queue joined by Sep.
func BindingMember(routingKey, pattern, queue string) string {
	return routingKey + Sep + pattern + Sep + queue
}

// Unacked is the hash of in-flight envelopes, keyed by delivery tag.
func (k Keys) Unacked() string { return k.Prefix + "unacked" }

// UnackedIndex is the sorted set of delivery tags scored by delivery time (unix seconds).
func (k Keys) UnackedIndex() string { return k.Prefix + "unacked_index" }

// UnackedMutex is the lock taken by the visibility-timeout restore sweep.
func (k Keys) UnackedMutex() string { return k.Prefix + "unacked_mutex" }

// DeadLetter is celerybridge's own list of messages no worker can run (not a kombu key): each
// element is a JSON object with the reason, source queue, time and the raw bytes.
func (k Keys) DeadLetter() string { return k.Prefix + "celerybridge.deadletter" }

// Fanout is the pub/sub channel of a fanout exchange: "/<db>.<exchange>" plus "/<routing_key>"
// when the routing key is non-empty (kombu's fanout_prefix and fanout_patterns defaults).
func (k Keys) Fanout(exchange, routingKey string) string {
	ch := k.Prefix + "/" + strconv.Itoa(k.DB) + "." + exchange
	if routingKey != "" {
		ch += "/" + routingKey
	}
	return ch
}

// LegacyFanout is Fanout as kombu before 5.4 names it on Sentinel: the prefix "/{db}." literally,
// without the database number (kombu 5.7's sentinel_fanout_compat publishes and listens on both).
func (k Keys) LegacyFanout(exchange, routingKey string) string {
	ch := k.Prefix + "/{db}." + exchange
	if routingKey != "" {
		ch += "/" + routingKey
	}
	return ch
}

func (k Keys) resultPrefix() string {
	p := k.ResultPrefix
	if p == "" {
		return ""
	}
	if strings.ContainsAny(p[len(p)-1:], ":_-.") {
		return p
	}
	return p + "_"
}

// TaskMeta is the result key of a task, also the pub/sub channel its result is published on.
func (k Keys) TaskMeta(taskID string) string { return k.resultPrefix() + "celery-task-meta-" + taskID }

// GroupMeta is the result key of a group (GroupResult.save).
func (k Keys) GroupMeta(groupID string) string {
	return k.resultPrefix() + "celery-taskset-meta-" + groupID
}

// Chord bookkeeping keys for chord header group groupID: the ordered results (.j), the counter
// used by add_to_chord (.t) and the chord size (.s).
func (k Keys) ChordJoin(groupID string) string    { return k.GroupMeta(groupID) + ".j" }
func (k Keys) ChordCounter(groupID string) string { return k.GroupMeta(groupID) + ".t" }
func (k Keys) ChordSize(groupID string) string    { return k.GroupMeta(groupID) + ".s" }

// ChordDone is Celery 5.7's set of (task id, index) parts already counted for chord groupID.
func (k Keys) ChordDone(groupID string) string { return k.GroupMeta(groupID) + ".d" }

// ChordClaim holds the claim on a chord body's dispatch and, after cleanup, the "done" marker.
func (k Keys) ChordClaim(groupID string) string { return k.GroupMeta(groupID) + ".c" }
