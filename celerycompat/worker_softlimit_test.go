package celerycompat_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// Whatever a handler returns because the soft limit fired reaches Python as billiard's
// SoftTimeLimitExceeded: ctx.Err(), context.Cause(ctx) (before: GoError), or either wrapped.
func TestWorkerSoftLimitWhateverTheHandlerReturns(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{Concurrency: 4})
	returns := map[string]func(ctx context.Context) error{
		"err":          func(ctx context.Context) error { return ctx.Err() },
		"cause":        func(ctx context.Context) error { return context.Cause(ctx) },
		"wrappedCause": func(ctx context.Context) error { return fmt.Errorf("step 2: %w", context.Cause(ctx)) },
		"sentinel":     func(ctx context.Context) error { return cc.ErrSoftTimeLimitExceeded },
	}
	for name, ret := range returns {
		_ = w.Register("soft."+name, cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
			<-ctx.Done()
			if !errors.Is(context.Cause(ctx), cc.ErrSoftTimeLimitExceeded) {
				return nil, fmt.Errorf("cause is %v", context.Cause(ctx))
			}
			return nil, ret(ctx)
		}))
	}
	runWorker(t, w)
	for name := range returns {
		t.Run(name, func(t *testing.T) {
			_, err := wait(t, s.send("soft."+name, nil, nil, cc.WithSoftTimeLimit(20*time.Millisecond)), 10*time.Second)
			var te *cc.TaskError
			if !errors.As(err, &te) || te.ExcType != "SoftTimeLimitExceeded" || te.ExcModule != "billiard.exceptions" {
				t.Fatalf("got %v, want billiard.exceptions.SoftTimeLimitExceeded", err)
			}
		})
	}
}
