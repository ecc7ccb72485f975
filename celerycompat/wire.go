package celerycompat

import (
	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// The wire format lives in package protocol. The names below keep it reachable from this package
// with the same meaning, so code using Producer, Worker and AsyncResult needs only one import.

// Codec is protocol.Codec: it encodes and decodes task messages and result values.
type Codec = protocol.Codec

// Message is protocol.Message: one Celery task message.
type Message = protocol.Message

// TimeLimit is protocol.TimeLimit.
type TimeLimit = protocol.TimeLimit

// DeliveryInfo is protocol.DeliveryInfo.
type DeliveryInfo = protocol.DeliveryInfo

// Embed is protocol.Embed.
type Embed = protocol.Embed

// Signature is protocol.Signature.
type Signature = protocol.Signature

// State is protocol.State: a Celery task state.
type State = protocol.State

// Version is protocol.Version: a Celery version.
type Version = protocol.Version

// Content types, compressions, states, revocation reasons and the GoError names; see protocol.
const (
	StatePending  = protocol.StatePending
	StateReceived = protocol.StateReceived
	StateStarted  = protocol.StateStarted
	StateSuccess  = protocol.StateSuccess
	StateFailure  = protocol.StateFailure
	StateRetry    = protocol.StateRetry
	StateRevoked  = protocol.StateRevoked
	StateRejected = protocol.StateRejected
	StateIgnored  = protocol.StateIgnored

	RevokedReasonRevoked    = protocol.RevokedReasonRevoked
	RevokedReasonExpired    = protocol.RevokedReasonExpired
	RevokedReasonTerminated = protocol.RevokedReasonTerminated
)

// Celery versions this module knows the wire differences of; see protocol.
var (
	Celery52 = protocol.Celery52
	Celery53 = protocol.Celery53
	Celery54 = protocol.Celery54
	Celery55 = protocol.Celery55
)

// NewTaskError builds a TaskError; see protocol.NewTaskError.
func NewTaskError(exc string, args ...any) *TaskError { return protocol.NewTaskError(exc, args...) }
