package celerycompat_test

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
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
