package celerycompat

import (
	"errors"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// Sentinel errors. Every error this package returns either is one of these, wraps one, or is one
// of the typed errors below; match with errors.Is and errors.As.
var (
	// ErrBroker marks a failure while talking to the broker (Redis, or RabbitMQ through package
	// amqp). Result backend failures do not match it: they match ErrBackend.
	ErrBroker = errors.New("celerycompat: broker")
	// ErrBackend marks a Redis failure while talking to the result backend: storing, reading or
	// forgetting a result, chord and group bookkeeping, and waits that Backend.Close interrupts.
	ErrBackend = errors.New("celerycompat: result backend")
	// ErrNoRoute marks a publish whose exchange and routing key match no bound queue (kombu would
	// drop the message silently; we refuse it).
	ErrNoRoute = errors.New("celerycompat: no route")
	// ErrInvalidURL marks a broker or backend URL we cannot use.
	ErrInvalidURL = errors.New("celerycompat: invalid url")
	// ErrResultNotReady is returned by non-blocking reads of a task that has not finished.
	ErrResultNotReady = errors.New("celerycompat: result not ready")
	// ErrWorkerClosed is returned by a worker's Run or Shutdown after it has shut down.
	ErrWorkerClosed = errors.New("celerycompat: worker closed")
	// ErrHookPermanent marks a hook error that retrying cannot fix (wrap it: fmt.Errorf("%w: ...",
	// ErrHookPermanent)). The worker logs it and goes on instead of retrying the hook and running
	// the task again.
	ErrHookPermanent = errors.New("celerycompat: permanent hook failure")
	// ErrDuplicateTask is returned when a task name is registered twice.
	ErrDuplicateTask = errors.New("celerycompat: task already registered")
	// ErrDeadlinePassed marks a message the Redis broker did not queue because the deadline of
	// the publish's ctx had passed when the publish reached Redis, by Redis's clock (or by the
	// Broker's, before it was sent); see BrokerConfig.ClientSideDeadline. Unlike a timeout, it
	// is certain that nothing was queued. The error also matches context.DeadlineExceeded, as
	// the timeout it is.
	ErrDeadlinePassed = errors.New("celerycompat: deadline passed before the broker ran the publish")
	// ErrUnsupportedTransport marks an operation the transport in use cannot do, such as
	// App.Broker (the Redis *Broker) on RabbitMQ.
	ErrUnsupportedTransport = errors.New("celerycompat: not supported on this transport")
)

// errBackendRedis is what a result backend failure wraps.
var errBackendRedis = ErrBackend

// Wire-format errors, defined in package protocol; the names here keep errors.Is working for
// callers of this package.
var (
	ErrDecode                 = protocol.ErrDecode                 // see protocol.ErrDecode
	ErrEncode                 = protocol.ErrEncode                 // see protocol.ErrEncode
	ErrUnsupportedContentType = protocol.ErrUnsupportedContentType // see protocol.ErrUnsupportedContentType
	ErrUnsupportedCompression = protocol.ErrUnsupportedCompression // see protocol.ErrUnsupportedCompression
	ErrBodyTooLarge           = protocol.ErrBodyTooLarge           // see protocol.ErrBodyTooLarge
	ErrInvalidConfig          = protocol.ErrInvalidConfig          // see protocol.ErrInvalidConfig
)

// DecodeError is protocol.DecodeError.
type DecodeError = protocol.DecodeError

// ContentTypeError is protocol.ContentTypeError.
type ContentTypeError = protocol.ContentTypeError

// TaskError is protocol.TaskError: a task failure in Celery's exception format.
type TaskError = protocol.TaskError
