package protocol

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

type selfConverting struct{}

func (selfConverting) Error() string { return "bad argument" }
func (selfConverting) TaskError() *TaskError {
	return &TaskError{ExcType: "TypeError", ExcModule: "builtins", ExcMessage: []any{"bad argument"}}
}

func TestErrorToTaskError(t *testing.T) {
	valueErr := &TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", 42}}
	tests := []struct {
		name string
		err  error
		want *TaskError
	}{
		{"nil", nil, nil},
		{"plain go error", errors.New("boom"), &TaskError{ExcType: "GoError", ExcModule: "github.com/celerybridge/celerybridge", ExcMessage: []any{"boom"}}},
		{"context error", fmt.Errorf("call: %w", context.DeadlineExceeded), &TaskError{ExcType: "GoError", ExcModule: GoErrorModule, ExcMessage: []any{"call: context deadline exceeded"}}},
		{"task error passes through", valueErr, valueErr},
		{"wrapped task error", fmt.Errorf("ctx: %w", valueErr), valueErr},
		{"empty exc_type defaults", &TaskError{ExcMessage: []any{"x"}}, &TaskError{ExcType: "GoError", ExcMessage: []any{"x"}}},
		{"self-converting error", fmt.Errorf("w: %w", selfConverting{}), &TaskError{ExcType: "TypeError", ExcModule: "builtins", ExcMessage: []any{"bad argument"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ErrorToTaskError(tt.err)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if ErrorToTaskError(valueErr) != valueErr {
		t.Error("a *TaskError is not passed through as the same pointer")
	}
}

func TestMarshalTaskError(t *testing.T) {
	tests := []struct {
		te   *TaskError
		want string
	}{
		{&TaskError{ExcType: "ValueError", ExcModule: "builtins", ExcMessage: []any{"bad", 42}},
			`{"exc_type": "ValueError", "exc_message": ["bad", 42], "exc_module": "builtins"}`},
		{&TaskError{ExcType: "E"}, `{"exc_type": "E", "exc_message": [], "exc_module": null}`},
		{&TaskError{ExcMessage: []any{"x"}}, `{"exc_type": "", "exc_message": ["x"], "exc_module": null}`},
		{&TaskError{ExcType: "E", ExcMessage: []any{make(chan int), "ok"}}, `{"exc_type": "E", "exc_message": ["<chan int>", "ok"], "exc_module": null}`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got, err := Codec{}.MarshalTaskError(tt.te)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(celerytest.JSONMeaning(t, []byte(tt.want)), celerytest.JSONMeaning(t, got)); diff != "" {
				t.Errorf("(-want +got):\n%s\ngot %s", diff, got)
			}
			if diff := cmp.Diff([]string{"exc_type", "exc_message", "exc_module"}, celerytest.TopKeys(t, got)); diff != "" {
				t.Errorf("key order (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTaskErrorFromValue(t *testing.T) {
	tests := []struct {
		name      string
		v         any
		want      *TaskError
		wantField string
	}{
		{"list message", map[string]any{"exc_type": "E", "exc_message": []any{"a", 1.0}, "exc_module": "m"},
			&TaskError{ExcType: "E", ExcModule: "m", ExcMessage: []any{"a", 1.0}, State: "FAILURE", Traceback: "tb"}, ""},
		{"scalar message", map[string]any{"exc_type": "E", "exc_message": "boom"},
			&TaskError{ExcType: "E", ExcMessage: []any{"boom"}, State: "FAILURE", Traceback: "tb"}, ""},
		{"null message", map[string]any{"exc_type": "E", "exc_message": nil},
			&TaskError{ExcType: "E", ExcMessage: []any{nil}, State: "FAILURE", Traceback: "tb"}, ""},
		{"missing message", map[string]any{"exc_type": "E"},
			&TaskError{ExcType: "E", ExcMessage: []any{""}, State: "FAILURE", Traceback: "tb"}, ""},
		{"not a dict", "boom", nil, "result"},
		{"no exc_type", map[string]any{"exc_message": []any{}}, nil, "result.exc_type"},
		{"bad module", map[string]any{"exc_type": "E", "exc_module": 3.0}, nil, "result.exc_module"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := TaskErrorFromValue(tt.v, StateFailure, "tb", "result")
			if tt.wantField != "" {
				var de *DecodeError
				if !errors.As(err, &de) || de.Field != tt.wantField {
					t.Fatalf("err = %v, want DecodeError on %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPyExcRepr(t *testing.T) {
	tests := []struct {
		te   *TaskError
		want string
	}{
		{&TaskError{ExcType: "ValueError", ExcMessage: []any{"bad", 42}}, "ValueError('bad', 42)"},
		{&TaskError{ExcType: "MyError", ExcMessage: []any{"boom"}}, "MyError('boom')"},
		{&TaskError{ExcType: "Outer.Inner", ExcMessage: nil}, "Inner()"},
	}
	for _, tt := range tests {
		if got := PyExcRepr(tt.te); got != tt.want {
			t.Errorf("PyExcRepr = %q, want %q", got, tt.want)
		}
	}
}
