// Package loadtest is the logic of examples/loadtest, the Go counterpart of the original rig's
// test_batch_submit.py, and of the consistency check the original document does by hand.
//
// A run has three phases:
//
//  1. Submit: N POSTs of {"task_index": i, "content": "测试任务<i>"} to <api>/submit-task at a
//     chosen concurrency (default: all at once, as the original's 1000 threads), each bounded by
//     a 10 s timeout as in the original. The summary (total, succeeded, failed, seconds) and the
//     submitted_tasks.txt lines "task_index,business_task_id,celery_task_id" are the original's.
//  2. Wait: until every accepted task has its callback, observed through a [Source]: the Go
//     receiver's GET /callbacks/stats and GET /callbacks/{task_id} ([ReceiverSource]), or the log
//     of a receiver that keeps no queryable store, such as the original Python one ([LogSource]).
//  3. Check: processed = the submitted Celery ids whose result backend state is SUCCESS or
//     FAILURE (read through REDIS_URL), then the [Report]: submitted, processed, callbacks
//     received, duplicates, missing ids and submit→callback latency percentiles. The run is
//     consistent when submitted = processed = callbacks received with no duplicate in the store.
//
// The package is used by the load tester's main package, the one-command demo and the
// end-to-end tests; none of its types are safe for concurrent use unless said otherwise.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// Defaults, as in the original rig.
const (
	DefaultAPIURL         = "http://127.0.0.1:8000"
	DefaultReceiverURL    = "http://127.0.0.1:8001"
	DefaultRedisURL       = "redis://127.0.0.1:6379/0"
	DefaultN              = 1000
	DefaultRequestTimeout = 10 * time.Second
	DefaultTimeout        = 5 * time.Minute
	DefaultPollInterval   = 50 * time.Millisecond
)

// Config configures a run. The zero value is the original test: 1000 submissions, all at once, to
// the API on :8000, callbacks counted by the Go receiver on :8001, results read from the Redis
// on localhost:6379/0, five minutes for everything.
type Config struct {
	// APIURL is the base URL of the API (POST /submit-task). Default DefaultAPIURL.
	APIURL string
	// N is the number of submissions. Default DefaultN.
	N int
	// Concurrency bounds the submissions in flight. Default N (all at once, like the original's
	// one thread per task).
	Concurrency int
	// RequestTimeout bounds one submission, as the original's requests timeout. Default 10 s.
	RequestTimeout time.Duration
	// Timeout bounds the whole run, submissions and the wait for callbacks. Default 5 min. The
	// original's 1 s tasks need about 30 min for 1000 (pass -timeout 40m).
	Timeout time.Duration
	// Source observes the callbacks. nil: a ReceiverSource on DefaultReceiverURL.
	Source Source
	// RedisURL is the result backend whose SUCCESS and FAILURE states count as processed.
	// Default DefaultRedisURL.
	RedisURL string
	// Pool, when set, is used for the result backend instead of dialling RedisURL (the caller
	// owns it).
	Pool celerycompat.Pool
	// BrokerURL is the broker whose callback outbox holds dead-lettered callbacks. Default
	// RedisURL (the rig uses one Redis for both).
	BrokerURL string
	// BrokerPool, when set, is used for the broker instead of dialling BrokerURL; when neither
	// BrokerURL nor BrokerPool is set, Pool is used.
	BrokerPool celerycompat.Pool
	// SubmittedFile receives the lines "task_index,business_task_id,celery_task_id" of the
	// accepted submissions, as the original's submitted_tasks.txt. Empty: not written.
	SubmittedFile string
	// Client sends the submissions through net/http. nil: a fasthttp client sized for
	// Concurrency connections, which costs the machine under test less CPU per submission.
	Client *http.Client
	// Progress receives the progress bars (stderr in the command). nil: no bars.
	Progress io.Writer
	// Log receives one line per submission, like the original's prints. nil: none.
	Log io.Writer
	// PollInterval is how often the Source is asked while waiting. Default 50 ms.
	PollInterval time.Duration
	// SkipWait stops after the submissions (for the API benchmark): no callbacks, no report
	// beyond the submission summary.
	SkipWait bool
}

func (c Config) withDefaults() Config {
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	// test_batch_submit.py takes the full submit URL in API_URL; accept it too.
	c.APIURL = strings.TrimSuffix(strings.TrimRight(c.APIURL, "/"), "/submit-task")
	if c.N == 0 {
		c.N = DefaultN
	}
	if c.Concurrency == 0 {
		c.Concurrency = c.N
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RedisURL == "" {
		c.RedisURL = DefaultRedisURL
	}
	if c.BrokerURL == "" && c.BrokerPool == nil {
		c.BrokerURL, c.BrokerPool = c.RedisURL, c.Pool
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.N < 0:
		return fmt.Errorf("loadtest: negative N %d", c.N)
	case c.Concurrency < 0:
		return fmt.Errorf("loadtest: negative concurrency %d", c.Concurrency)
	case c.RequestTimeout < 0 || c.Timeout < 0 || c.PollInterval < 0:
		return errors.New("loadtest: negative duration")
	}
	return nil
}

// ErrInconsistent is returned by Run (wrapped, with the counts) when the report is not
// consistent; the report is returned too.
var ErrInconsistent = errors.New("loadtest: inconsistent")

// Run submits, waits for the callbacks and checks the result backend. It returns the report and
// nil when the run is consistent; the report and an error wrapping ErrInconsistent when it is
// not (including a timeout, which leaves callbacks missing); no report and an error when the run
// could not be made at all (bad config, Redis unreachable).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	src := cfg.Source
	if src == nil {
		src = &ReceiverSource{URL: DefaultReceiverURL}
	}
	var before *SourceStats
	if !cfg.SkipWait {
		before = Baseline(ctx, src)
	}
	sub, err := Submit(ctx, cfg)
	if err != nil {
		return nil, err
	}
	rep := &Report{Submission: sub.Summary()}
	if cfg.SubmittedFile != "" {
		if err := os.WriteFile(cfg.SubmittedFile, sub.SubmittedLines(), 0o644); err != nil {
			return nil, fmt.Errorf("loadtest: write %s: %w", cfg.SubmittedFile, err)
		}
	}
	if cfg.SkipWait {
		return rep, nil
	}
	obs, waitErr := Wait(ctx, cfg, src, sub, before)
	if waitErr != nil && obs == nil {
		return nil, waitErr
	}
	// The check reads Redis after the wait: give it its own short deadline so a run that timed
	// out still reports what was processed.
	checkCtx, cancelCheck := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancelCheck()
	proc, err := CountProcessed(checkCtx, cfg, sub)
	if err != nil {
		return nil, err
	}
	rep.fill(sub, obs, proc, src)
	if dead, err := DeadLettered(checkCtx, cfg, sub); err != nil {
		rep.DeadLetterError = err.Error()
	} else {
		rep.DeadLettered = dead
	}
	if waitErr != nil {
		rep.TimedOut = true
		rep.WaitError = waitErr.Error()
	}
	if !rep.Consistent() {
		return rep, fmt.Errorf("%w: %s", ErrInconsistent, rep.Verdict())
	}
	return rep, nil
}
