package protocol

import (
	"encoding/json"
	"time"
)

// Content types Celery and kombu put in the envelope's "content-type" field.
const (
	ContentTypeJSON    = "application/json"
	ContentTypeMsgpack = "application/x-msgpack"
	ContentTypePickle  = "application/x-python-serialize"
	ContentTypeYAML    = "application/x-yaml"
)

// Compression mime types Celery writes in the "compression" header.
const (
	CompressionZlib  = "application/x-gzip"
	CompressionBzip2 = "application/x-bz2"
)

// Message is one Celery task message: the kombu envelope's properties plus the task's headers and
// body, decoded. Protocol 2 is what Celery 4+ writes; protocol 1 messages (headers in the body) are
// decoded into the same struct and can be written for old peers.
//
// Decode keeps every header and property it does not model in ExtraHeaders and ExtraProperties,
// so decode → encode → decode loses nothing. A Message is a value: it is not safe for concurrent
// mutation.
type Message struct {
	// Protocol is 2 (headers carry the task metadata) or 1 (everything in the body). Zero means 2.
	Protocol int

	// Task headers (protocol 2). Empty strings and nil pointers are written as JSON null.
	Lang       string     // "py" from Python producers, "go" from ours
	Task       string     // registered task name; required
	ID         string     // task id (uuid); required
	Shadow     string     // display-name override
	ETA        *time.Time // run not before
	Expires    *time.Time // revoke if not started by then
	Group      string
	GroupIndex *int
	Retries    int
	TimeLimit  TimeLimit
	RootID     string
	ParentID   string
	ArgsRepr   string
	KwargsRepr string
	Origin     string
	// IgnoreResult asks the worker not to store SUCCESS.
	IgnoreResult bool
	// StampedHeaders and Stamps exist from Celery 5.3 on; nil means the header was absent or null.
	StampedHeaders []string
	Stamps         map[string]any
	// ReplacedTaskNesting exists from Celery 5.3.5 on; nil means absent.
	ReplacedTaskNesting *int
	// UTC is protocol 1's "utc" flag: false means a naive ETA/expires is in the app's timezone.
	// Protocol 2 has no such flag (naive times are UTC); Decode sets it true there.
	UTC bool
	// Redelivered is set by kombu when it restores a message.
	Redelivered bool
	// ExtraHeaders holds custom headers (apply_async(headers=...)) and any header not modelled above,
	// as raw JSON, preserved on re-encode.
	ExtraHeaders map[string]json.RawMessage

	// Body.
	Args   []any
	Kwargs map[string]any
	Embed  Embed

	// Envelope properties.
	CorrelationID   string // the task id, as Celery sets it
	ReplyTo         string
	DeliveryMode    int // 2 for tasks
	DeliveryTag     string
	DeliveryInfo    DeliveryInfo
	Priority        int
	Expiration      string // properties.expiration: milliseconds as a string; not enforced on Redis
	BodyEncoding    string // "base64"
	ContentType     string // zero means application/json
	ContentEncoding string // zero means utf-8
	// Compression is the "compression" header's mime type, "" for none.
	Compression string
	// ExtraProperties holds unknown envelope properties, preserved on re-encode.
	ExtraProperties map[string]json.RawMessage
}

// TimeLimit is the "timelimit" header: [hard, soft] seconds, each optional. (Celery's protocol
// document says (soft, hard); the code and the wire say hard first.)
type TimeLimit struct {
	Hard *float64
	Soft *float64
}

// DeliveryInfo is properties.delivery_info: where the message was published and, after a
// restore, whether it was redelivered.
type DeliveryInfo struct {
	Exchange    string
	RoutingKey  string
	Redelivered bool
}

// Embed is the third element of a protocol 2 body. Chain is stored reversed: its last element is
// the next task to run.
type Embed struct {
	Callbacks []Signature
	Errbacks  []Signature
	Chain     []Signature
	Chord     *Signature
}

// Signature is Celery's serialized canvas signature (a dict on the wire).
type Signature struct {
	Task    string
	Args    []any
	Kwargs  map[string]any
	Options map[string]any
	// SubtaskType is "" for a plain task, or "chain", "group", "chord", "chunks", "xmap", "xstarmap".
	SubtaskType string
	Immutable   bool
}

// Date is a calendar date, decoded from kombu's {"__type__": "date"} marker.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// TimeOfDay is a wall-clock time without a date, decoded from kombu's {"__type__": "time"} marker.
// Value keeps Python's isoformat text (for example "12:30:00.123456").
type TimeOfDay struct{ Value string }

// Decimal is a decimal number kept as its exact text, decoded from kombu's {"__type__": "decimal"}
// marker (and written as one to peers that understand markers).
type Decimal string

// UUID is a UUID in its canonical 36-character text form, decoded from kombu's {"__type__": "uuid"}
// marker.
type UUID string
