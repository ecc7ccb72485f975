package celerycompat_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

func TestNewTaskError(t *testing.T) {
	for _, tc := range []struct {
		exc  string
		args []any
		want cc.TaskError
	}{
		{"ValueError", []any{"bad", 42}, cc.TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", 42}}},
		{"myapp.errors.QuotaExceeded", []any{7}, cc.TaskError{ExcType: "QuotaExceeded", ExcModule: "myapp.errors", ExcMessage: []any{7}}},
		{"KeyError", nil, cc.TaskError{ExcType: "KeyError", ExcModule: "builtins", ExcMessage: []any{}}},
	} {
		if d := cmp.Diff(tc.want, *cc.NewTaskError(tc.exc, tc.args...)); d != "" {
			t.Errorf("NewTaskError(%q) (-want +got):\n%s", tc.exc, d)
		}
	}
}

// The helper's error is what the result backend stores: a real ValueError for Python.
func TestNewTaskErrorStored(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.bad", cc.HandlerFunc(func(ctx context.Context, req *cc.Request) (any, error) {
		return nil, cc.NewTaskError("ValueError", "bad input")
	}))
	runWorker(t, w)
	_, err := wait(t, s.send("cap.bad", nil, nil), 10*time.Second)
	var te *cc.TaskError
	if !errors.As(err, &te) || te.ExcType != "ValueError" || te.ExcModule != "builtins" || te.Message() != "bad input" {
		t.Fatalf("stored %v, want builtins.ValueError('bad input')", err)
	}
}
