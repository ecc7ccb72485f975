package celerycompat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// DefaultRetryDelay is Celery's default_retry_delay: the countdown of a retry that names none.
const DefaultRetryDelay = 180 * time.Second

// DefaultMaxRetries is Celery's max_retries default.
const DefaultMaxRetries = 3

// RetryError asks the worker to retry the task (Celery's self.retry()). Return it from a handler
// (Retry builds one). The task is re-published with the same id and retries+1, RETRY is stored,
// and task_retry fires; past the task's max retries it fails with MaxRetriesExceededError.
type RetryError struct {
	Err        error          // the reason (Celery's exc=), stored with the RETRY state
	Countdown  *time.Duration // delay before the retry; nil: ETA, or the task's default retry delay
	ETA        *time.Time
	MaxRetries *int // overrides the task's max retries for this call
}

func (e *RetryError) Error() string {
	if e.Err == nil {
		return "retry requested"
	}
	return "retry requested: " + e.Err.Error()
}

func (e *RetryError) Unwrap() error { return e.Err }

// RetryOption sets one field of a RetryError.
type RetryOption func(*RetryError)

// RetryIn retries after d (Celery's countdown=).
func RetryIn(d time.Duration) RetryOption { return func(r *RetryError) { r.Countdown = &d } }

// RetryAt retries at t (Celery's eta=).
func RetryAt(t time.Time) RetryOption { return func(r *RetryError) { r.ETA = &t } }

// RetryMax overrides the task's max retries for this retry (Celery's max_retries=).
func RetryMax(n int) RetryOption { return func(r *RetryError) { r.MaxRetries = &n } }

// Retry returns a *RetryError for err with opts.
func Retry(err error, opts ...RetryOption) error {
	r := &RetryError{Err: err}
	for _, o := range opts {
		o(r)
	}
	return r
}

// TaskOption configures a task at registration.
type TaskOption func(*taskConfig)

type taskConfig struct {
	maxRetries        int // < 0: unlimited (Celery's max_retries=None)
	defaultRetryDelay time.Duration
	timeLimit         time.Duration
	softTimeLimit     time.Duration
	autoRetry         func(error) bool
	retryBackoff      time.Duration
	retryBackoffMax   time.Duration
	retryJitter       bool
	ignoreResult      bool
	trackStarted      *bool
}

func defaultTaskConfig() taskConfig {
	return taskConfig{
		maxRetries: DefaultMaxRetries, defaultRetryDelay: DefaultRetryDelay,
		retryBackoffMax: 600 * time.Second, retryJitter: true,
	}
}

// TaskMaxRetries sets max_retries (default 3); a negative n means unlimited.
func TaskMaxRetries(n int) TaskOption { return func(c *taskConfig) { c.maxRetries = n } }

// TaskDefaultRetryDelay sets default_retry_delay (default 180 s).
func TaskDefaultRetryDelay(d time.Duration) TaskOption {
	return func(c *taskConfig) { c.defaultRetryDelay = d }
}

// TaskTimeLimits sets the task's hard and soft time limits (time_limit, soft_time_limit); zero
// means none. The message's timelimit header, when set, overrides them.
func TaskTimeLimits(hard, soft time.Duration) TaskOption {
	return func(c *taskConfig) { c.timeLimit, c.softTimeLimit = hard, soft }
}

// TaskAutoRetry retries automatically when match(err) is true (Celery's autoretry_for), with
// exponential backoff when backoff > 0 (retry_backoff: backoff * 2^retries, capped at
// backoffMax, default 600 s; retry_backoff_max), with full jitter unless noJitter. With backoff 0
// the task's default retry delay is used.
func TaskAutoRetry(match func(error) bool, backoff, backoffMax time.Duration, noJitter bool) TaskOption {
	return func(c *taskConfig) {
		c.autoRetry, c.retryBackoff, c.retryJitter = match, backoff, !noJitter
		if backoffMax > 0 {
			c.retryBackoffMax = backoffMax
		}
	}
}

// TaskIgnoreResult stops SUCCESS (and STARTED) from being stored, like ignore_result=True.
func TaskIgnoreResult() TaskOption { return func(c *taskConfig) { c.ignoreResult = true } }

// TaskTrackStarted overrides the worker's TrackStarted for this task.
func TaskTrackStarted(on bool) TaskOption { return func(c *taskConfig) { c.trackStarted = &on } }

// backoffDelay is Celery's get_exponential_backoff_interval.
func (c *taskConfig) backoffDelay(retries int) time.Duration {
	d := c.retryBackoff
	for i := 0; i < retries && d < c.retryBackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.retryBackoffMax)
	if c.retryJitter && d > 0 {
		d = time.Duration(rand.Int64N(int64(d) + 1))
	}
	return d
}

// asRetry turns a handler error into a retry request when the handler asked for one or the task
// auto-retries that error.
func (c *taskConfig) asRetry(err error, retries int) *RetryError {
	var r *RetryError
	if errors.As(err, &r) {
		return r
	}
	if c.autoRetry != nil && c.autoRetry(err) {
		r = &RetryError{Err: err}
		if c.retryBackoff > 0 {
			d := c.backoffDelay(retries)
			r.Countdown = &d
		}
		return r
	}
	return nil
}

// maxRetriesError is what a task that asked to retry past its limit fails with.
func maxRetriesError(req *Request, cause error) *TaskError {
	msg := fmt.Sprintf("Can't retry %s[%s] args:%s kwargs:%s", req.Task, req.ID, protocol.ArgsRepr(req.Args), protocol.PyRepr(req.Kwargs))
	if cause != nil {
		msg += ": " + cause.Error()
	}
	return &TaskError{ExcType: "MaxRetriesExceededError", ExcModule: "celery.exceptions", ExcMessage: []any{msg}}
}
