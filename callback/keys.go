package callback

// DefaultPrefix is the default prefix of every outbox key in Redis.
const DefaultPrefix = "celerybridge.callback."

// Keys names the Redis keys of one outbox. Every key is the configured prefix followed by the
// suffix shown. Event ids are the members and fields throughout. For Redis Cluster, put a hash tag
// in the prefix (for example "{celerybridge.callback}.") so the scripts see all keys on one slot.
type Keys struct {
	// Events (hash "events"): event id → the immutable outbox record, three lines:
	// "cb1 <created, Unix ms>", the destination URL, and the JSON body without "attempt".
	// Present while the event is pending, in flight or dead.
	Events string
	// Due (sorted set "due"): event id → Unix ms when it may be sent next. The pending events,
	// including those waiting out a backoff.
	Due string
	// Leased (sorted set "leased"): event id → Unix ms when the dispatcher's lease expires. The
	// in-flight events. An expired lease goes back to Due on the next claim.
	Leased string
	// Attempts (hash "attempts"): event id → number of claims so far (the "attempt" sent).
	Attempts string
	// Since (hash "since"): event id → Unix ms from which MaxAge is counted (enqueue or replay).
	Since string
	// Last (hash "last"): event id → JSON {"status": HTTP status or 0, "error": text, "at": Unix
	// ms} of the latest failed attempt.
	Last string
	// Dead (sorted set "dead"): event id → Unix ms when it was dead-lettered.
	Dead string
	// DeadInfo (hash "dead.info"): event id → JSON {"reason", "last_status", "last_error",
	// "attempts"}.
	DeadInfo string
	// Delivered (sorted set "delivered"): event id → Unix ms of delivery, kept for
	// OutboxConfig.DeliveredRetention so that a task re-run after a crash does not send again.
	Delivered string
}

func newKeys(prefix string) Keys {
	return Keys{
		Events:    prefix + "events",
		Due:       prefix + "due",
		Leased:    prefix + "leased",
		Attempts:  prefix + "attempts",
		Since:     prefix + "since",
		Last:      prefix + "last",
		Dead:      prefix + "dead",
		DeadInfo:  prefix + "dead.info",
		Delivered: prefix + "delivered",
	}
}
