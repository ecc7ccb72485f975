package celerycompat

import "github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

// Keys builds every Redis key and channel name kombu and Celery use, with the broker's
// global_keyprefix and the result backend's prefix applied. The zero value gives kombu's defaults
// for database 0 with no prefix. Keys is a value; it is safe for concurrent use.
type Keys = rdb.Keys

// BindingMember is one member of a kombu binding set: routing_key, pattern and queue joined by
// kombu's separator "\x06\x16".
func BindingMember(routingKey, pattern, queue string) string {
	return rdb.BindingMember(routingKey, pattern, queue)
}

// priorityStep maps a message priority to kombu's step: clamp to 0..9, then the largest step <= p.
func priorityStep(priority int) int { return rdb.PriorityStep(priority) }

// kombu's separator and priority steps, for the control and mingle code that reads binding sets.
const sep = rdb.Sep

var prioritySteps = rdb.PrioritySteps
