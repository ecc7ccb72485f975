package gocelery

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/google/uuid"
)

// CeleryBroker is where tasks are sent and taken from. RedisCeleryBroker and AMQPCeleryBroker
// are the implementations this package runs on its engine; any other implementation is used
// through these two methods alone (see CeleryWorker).
type CeleryBroker interface {
	// SendCeleryMessage publishes one message.
	SendCeleryMessage(*CeleryMessage) error
	// GetTaskMessage takes one task without waiting; (nil, nil) or an error when there is none.
	GetTaskMessage() (*TaskMessage, error)
}

// CeleryBackend is where results are stored and read. RedisCeleryBackend is the implementation
// this package runs on its engine; any other implementation is used through these two methods.
type CeleryBackend interface {
	// GetResult reads a task's result without waiting.
	GetResult(string) (*ResultMessage, error)
	// SetResult stores a task's result.
	SetResult(taskID string, result *ResultMessage) error
}

// CeleryTask is a task that takes keyword arguments: ParseKwargs receives them (numbers as
// float64, as encoding/json decodes them), then RunTask runs the task. The worker calls both on
// a fresh copy of the registered value for every task (see the package doc), so fields set by
// ParseKwargs are never shared between tasks running at once.
type CeleryTask interface {
	// ParseKwargs takes the task's keyword arguments; an error fails the task.
	ParseKwargs(map[string]interface{}) error
	// RunTask runs the task; the value is stored as its result, an error as its failure.
	RunTask() (interface{}, error)
}

// CeleryClient sends tasks and runs a worker for the tasks registered on it. It is safe for
// concurrent use.
type CeleryClient struct {
	broker  CeleryBroker
	backend CeleryBackend
	worker  *CeleryWorker
}

// NewCeleryClient returns a client sending through broker, reading results from backend, and
// whose worker runs up to numWorkers tasks at once. A nil broker or backend is an error
// wrapping ErrConfig; numWorkers below 1 is taken as 1.
func NewCeleryClient(broker CeleryBroker, backend CeleryBackend, numWorkers int) (*CeleryClient, error) {
	if broker == nil || backend == nil {
		return nil, fmt.Errorf("%w: NewCeleryClient needs a broker and a backend", ErrConfig)
	}
	return &CeleryClient{broker: broker, backend: backend, worker: NewCeleryWorker(broker, backend, numWorkers)}, nil
}

// Register makes task run for the Celery task name: a CeleryTask (keyword arguments) or a
// function (positional arguments). Registering a name again replaces the task.
func (cc *CeleryClient) Register(name string, task interface{}) { cc.worker.Register(name, task) }

// StartWorkerWithContext starts the worker and returns at once; it stops when ctx is
// cancelled or StopWorker is called.
func (cc *CeleryClient) StartWorkerWithContext(ctx context.Context) {
	cc.worker.StartWorkerWithContext(ctx)
}

// StartWorker starts the worker and returns at once; StopWorker stops it.
func (cc *CeleryClient) StartWorker() { cc.worker.StartWorker() }

// StopWorker stops fetching, waits for the running tasks to finish and store their results,
// and returns.
func (cc *CeleryClient) StopWorker() { cc.worker.StopWorker() }

// WaitForStopWorker waits until the worker has stopped (its context cancelled, or StopWorker).
func (cc *CeleryClient) WaitForStopWorker() { cc.worker.StopWait() }

// Delay sends the task name with positional args and returns its result handle.
func (cc *CeleryClient) Delay(task string, args ...interface{}) (*AsyncResult, error) {
	if args == nil {
		args = []interface{}{}
	}
	return cc.delay(task, args, nil)
}

// DelayKwargs sends the task name with keyword args and returns its result handle.
func (cc *CeleryClient) DelayKwargs(task string, args map[string]interface{}) (*AsyncResult, error) {
	return cc.delay(task, []interface{}{}, args)
}

func (cc *CeleryClient) delay(task string, args []interface{}, kwargs map[string]interface{}) (*AsyncResult, error) {
	if kwargs == nil {
		kwargs = map[string]interface{}{}
	}
	if eb, ok := cc.broker.(engineBroker); ok {
		id, err := eb.send(context.Background(), task, args, kwargs)
		if err != nil {
			return nil, err
		}
		return &AsyncResult{TaskID: id, backend: cc.backend}, nil
	}
	// Any other broker gets a protocol 1 message, as gocelery wrote it.
	tm := &TaskMessage{ID: uuid.NewString(), Task: task, Args: args, Kwargs: kwargs}
	body, err := tm.Encode()
	if err != nil {
		return nil, err
	}
	if err := cc.broker.SendCeleryMessage(NewCeleryMessage(body)); err != nil {
		return nil, fmt.Errorf("gocelery: send %s: %w", task, err)
	}
	return &AsyncResult{TaskID: tm.ID, backend: cc.backend}, nil
}

// engineBroker is a broker this package runs on celerycompat (RedisCeleryBroker,
// AMQPCeleryBroker): Delay sends through its producer and CeleryWorker runs celerycompat.Worker
// on its transport.
type engineBroker interface {
	send(ctx context.Context, task string, args []any, kwargs map[string]any, opts ...celerycompat.SendOption) (string, error)
	transportFor(ctx context.Context) (celerycompat.Transport, error)
	queue() string
}

// AsyncResult is the handle on one task's result. It is safe for concurrent use.
type AsyncResult struct {
	// TaskID is the task's id.
	TaskID string

	backend CeleryBackend
}

// Get waits up to timeout for the task to finish and returns its result (numbers as float64,
// as encoding/json decodes them). A task that failed returns an error wrapping ErrTaskFailed
// and the *celerycompat.TaskError (exception, traceback); no result within timeout is an
// error wrapping ErrTimeout. On a RedisCeleryBackend it wakes on the result's PUBLISH; on any
// other backend it polls GetResult.
func (ar *AsyncResult) Get(timeout time.Duration) (interface{}, error) {
	if ar.backend == nil {
		return nil, errNoBackend(ar.TaskID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if rb, ok := ar.backend.(*RedisCeleryBackend); ok {
		b, err := rb.engine()
		if err != nil {
			return nil, err
		}
		meta, err := b.AsyncResult(ar.TaskID).Wait(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w after %v for %s", ErrTimeout, timeout, ar.TaskID)
			}
			return nil, fmt.Errorf("gocelery: get %s: %w", ar.TaskID, err)
		}
		return outcome(resultMessageOf(meta), meta)
	}
	wait := time.Millisecond
	for {
		v, err := ar.AsyncGet()
		if err == nil || !errors.Is(err, ErrResultNotAvailable) {
			return v, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w after %v for %s", ErrTimeout, timeout, ar.TaskID)
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// AsyncGet returns the result if the task has finished, without waiting. A task with no
// result yet is an error wrapping ErrResultNotAvailable; a failed task one wrapping
// ErrTaskFailed.
func (ar *AsyncResult) AsyncGet() (interface{}, error) {
	if ar.backend == nil {
		return nil, errNoBackend(ar.TaskID)
	}
	if rb, ok := ar.backend.(*RedisCeleryBackend); ok {
		b, err := rb.engine()
		if err != nil {
			return nil, err
		}
		meta, err := b.GetMeta(context.Background(), ar.TaskID)
		if err != nil {
			return nil, fmt.Errorf("gocelery: get %s: %w", ar.TaskID, err)
		}
		if !meta.Status.Ready() {
			return nil, fmt.Errorf("%w: %s is %s", ErrResultNotAvailable, ar.TaskID, meta.Status)
		}
		return outcome(resultMessageOf(meta), meta)
	}
	rm, err := ar.backend.GetResult(ar.TaskID)
	if err != nil {
		return nil, err
	}
	if rm == nil {
		return nil, fmt.Errorf("%w: %s", ErrResultNotAvailable, ar.TaskID)
	}
	return outcome(rm, nil)
}

// outcome is the value of a finished result, or its failure as an error.
func outcome(rm *ResultMessage, meta *celerycompat.ResultMeta) (interface{}, error) {
	switch rm.Status {
	case string(celerycompat.StateSuccess):
		return rm.Result, nil
	case string(celerycompat.StateFailure), string(celerycompat.StateRevoked):
		if meta != nil {
			if te, ok := meta.Result.(*celerycompat.TaskError); ok {
				if te.Traceback == "" {
					te.Traceback = meta.Traceback
				}
				return nil, fmt.Errorf("%w: %s %s: %w", ErrTaskFailed, rm.ID, rm.Status, te)
			}
		}
		return nil, fmt.Errorf("%w: %s %s: %v", ErrTaskFailed, rm.ID, rm.Status, rm.Result)
	default:
		return nil, fmt.Errorf("%w: %s is %s", ErrResultNotAvailable, rm.ID, rm.Status)
	}
}

// Ready reports whether the task has finished (succeeded or failed). A task with no stored
// state is (false, nil).
func (ar *AsyncResult) Ready() (bool, error) {
	if ar.backend == nil {
		return false, errNoBackend(ar.TaskID)
	}
	if rb, ok := ar.backend.(*RedisCeleryBackend); ok {
		b, err := rb.engine()
		if err != nil {
			return false, err
		}
		ready, err := b.AsyncResult(ar.TaskID).Ready(context.Background())
		if err != nil {
			return false, fmt.Errorf("gocelery: ready %s: %w", ar.TaskID, err)
		}
		return ready, nil
	}
	rm, err := ar.backend.GetResult(ar.TaskID)
	if errors.Is(err, ErrResultNotAvailable) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return rm != nil && celerycompat.State(rm.Status).Ready(), nil
}

// errNoBackend: an AsyncResult built as a literal rather than returned by Delay.
func errNoBackend(id string) error {
	return fmt.Errorf("%w: AsyncResult %s has no backend (use the one Delay returns)", ErrConfig, id)
}
