package celerycompat

import (
	"time"

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

// Date is protocol.Date.
type Date = protocol.Date

// TimeOfDay is protocol.TimeOfDay.
type TimeOfDay = protocol.TimeOfDay

// Decimal is protocol.Decimal.
type Decimal = protocol.Decimal

// UUID is protocol.UUID.
type UUID = protocol.UUID

// State is protocol.State: a Celery task state.
type State = protocol.State

// Version is protocol.Version: a Celery version.
type Version = protocol.Version

// Content types, compressions, states, revocation reasons and the GoError names; see protocol.
const (
	ContentTypeJSON    = protocol.ContentTypeJSON
	ContentTypeMsgpack = protocol.ContentTypeMsgpack
	ContentTypePickle  = protocol.ContentTypePickle
	ContentTypeYAML    = protocol.ContentTypeYAML

	CompressionZlib  = protocol.CompressionZlib
	CompressionBzip2 = protocol.CompressionBzip2

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

	GoErrorType   = protocol.GoErrorType
	GoErrorModule = protocol.GoErrorModule
)

// Celery versions this module knows the wire differences of; see protocol.
var (
	Celery52 = protocol.Celery52
	Celery53 = protocol.Celery53
	Celery54 = protocol.Celery54
	Celery55 = protocol.Celery55
)

// ParseVersion parses "5", "5.2" or "5.2.6"; see protocol.ParseVersion.
func ParseVersion(s string) (Version, error) { return protocol.ParseVersion(s) }

// NewTaskError builds a TaskError; see protocol.NewTaskError.
func NewTaskError(exc string, args ...any) *TaskError { return protocol.NewTaskError(exc, args...) }

// ErrorToTaskError converts a Go error into the exception Celery stores for a failed task; see
// protocol.ErrorToTaskError.
func ErrorToTaskError(err error) *TaskError { return protocol.ErrorToTaskError(err) }

// PyRepr is Python's repr() of a decoded value; see protocol.PyRepr.
func PyRepr(v any) string { return protocol.PyRepr(v) }

// Naive marks t as a naive Python datetime; see protocol.Naive.
func Naive(t time.Time) time.Time { return protocol.Naive(t) }

// IsNaive reports whether t was marked naive; see protocol.IsNaive.
func IsNaive(t time.Time) bool { return protocol.IsNaive(t) }

// PyISOFormat formats t like Python's datetime.isoformat(); see protocol.PyISOFormat.
func PyISOFormat(t time.Time) string { return protocol.PyISOFormat(t) }

// ParsePyTime parses the time formats Celery and kombu write; see protocol.ParsePyTime.
func ParsePyTime(s string) (time.Time, error) { return protocol.ParsePyTime(s) }
