package celerycompat_test

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// The worker logs each task as Celery's does: received, succeeded in Ns: result, raised,
// retry, time limits, at Celery's levels and with the task id.
func TestWorkerLogsEachTaskLikeCelery(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	var logs lockedBuffer
	w := s.newWorker(cc.WorkerConfig{Concurrency: 4, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_ = w.Register("cap.add", addHandler)
	_ = w.Register("cap.bad", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return nil, cc.NewTaskError("ValueError", "bad")
	}))
	_ = w.Register("cap.retry", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		if req.Retries == 0 {
			d := 10 * time.Millisecond
			return nil, &cc.RetryError{Err: errors.New("later"), Countdown: &d}
		}
		return "done", nil
	}))
	_ = w.Register("cap.soft", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	runWorker(t, w)
	add := s.send("cap.add", []any{2, 3}, nil)
	bad := s.send("cap.bad", nil, nil)
	retry := s.send("cap.retry", nil, nil)
	soft := s.send("cap.soft", nil, nil, cc.WithSoftTimeLimit(20*time.Millisecond))
	for _, r := range []*cc.AsyncResult{add, bad, retry, soft} {
		_, _ = wait(t, r, 10*time.Second)
	}
	q := regexp.QuoteMeta
	want := []string{
		`level=INFO msg="Task cap.add\[` + q(add.ID) + `\] received" task_id=` + q(add.ID) + ` task=cap.add`,
		`level=INFO msg="Task cap.add\[` + q(add.ID) + `\] succeeded in [0-9.e-]+s: 5(\.0)?" runtime=[0-9.e-]+ task_id=` + q(add.ID),
		`level=ERROR msg="Task cap.bad\[` + q(bad.ID) + `\] raised unexpected: ValueError\('bad'\)".* task_id=` + q(bad.ID),
		`level=INFO msg="Task cap.retry\[` + q(retry.ID) + `\] retry: Retry in 0.01s: later" task_id=` + q(retry.ID),
		`level=INFO msg="Task cap.retry\[` + q(retry.ID) + `\] succeeded in [0-9.e-]+s: 'done'"`,
		`level=WARN msg="Soft time limit \(0.02s\) exceeded for cap.soft\[` + q(soft.ID) + `\]" task_id=` + q(soft.ID),
		`level=ERROR msg="Task cap.soft\[` + q(soft.ID) + `\] raised unexpected: SoftTimeLimitExceeded\('SoftTimeLimitExceeded\(\)'\)"`,
	}
	out := logs.String()
	for _, re := range want {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("no line matches %s", re)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}

// reprSpy counts how often it is rendered to JSON: by the result store, and by the success log
// line's repr when that line is built.
type reprSpy struct{ n *atomic.Int64 }

func (r reprSpy) MarshalJSON() ([]byte, error) {
	r.n.Add(1)
	return []byte(`"spy"`), nil
}

// A logger that keeps only warnings gets the failure and time-limit lines and no info lines, and
// the success line is not even built: its result repr is skipped (the result store renders the
// value once more than that under an info logger, and no more).
func TestWorkerFormatsOnlyKeptLogLines(t *testing.T) {
	marshals := func(level slog.Level) (int64, string) {
		s := newWStack(t, cc.BrokerConfig{})
		var logs lockedBuffer
		var n atomic.Int64
		w := s.newWorker(cc.WorkerConfig{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level}))})
		_ = w.Register("cap.spy", cc.HandlerFunc(func(context.Context, *cc.Request) (any, error) { return reprSpy{&n}, nil }))
		_ = w.Register("cap.bad", cc.HandlerFunc(func(context.Context, *cc.Request) (any, error) {
			return nil, cc.NewTaskError("ValueError", "bad")
		}))
		runWorker(t, w)
		spy, bad := s.send("cap.spy", nil, nil), s.send("cap.bad", nil, nil)
		for _, r := range []*cc.AsyncResult{spy, bad} {
			_, _ = wait(t, r, 10*time.Second)
		}
		out := logs.String()
		if !regexp.MustCompile(`level=ERROR msg="Task cap.bad\[` + regexp.QuoteMeta(bad.ID) + `\] raised unexpected: ValueError\('bad'\)"`).MatchString(out) {
			t.Errorf("logger at %v: no failure line in\n%s", level, out)
		}
		return n.Load(), out
	}
	atInfo, infoLog := marshals(slog.LevelInfo)
	atWarn, warnLog := marshals(slog.LevelWarn)
	if !regexp.MustCompile(`succeeded in [0-9.e-]+s: 'spy'`).MatchString(infoLog) {
		t.Errorf("info logger: no success line in\n%s", infoLog)
	}
	if regexp.MustCompile(`level=INFO`).MatchString(warnLog) {
		t.Errorf("warn logger got info lines:\n%s", warnLog)
	}
	if atInfo-atWarn != 1 {
		t.Errorf("result rendered %d times under an info logger and %d under a warn logger; want exactly one fewer (no repr)", atInfo, atWarn)
	}
}
