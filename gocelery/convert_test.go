package gocelery

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestConvertArg(t *testing.T) {
	type want struct {
		v   any
		bad bool
	}
	n := func(s string) json.Number { return json.Number(s) }
	tests := []struct {
		name string
		in   any
		to   any // a value of the parameter type
		want want
	}{
		{"int from integer", n("3"), int(0), want{v: 3}},
		{"int drops a fraction as gocelery did", n("2.9"), int(0), want{v: 2}},
		{"float32 as gocelery did", n("1.5"), float32(0), want{v: float32(1.5)}},
		{"float64", n("1.5"), float64(0), want{v: 1.5}},
		{"int64 exact beyond 2^53", n("9007199254740993"), int64(0), want{v: int64(9007199254740993)}},
		{"uint64", n("18446744073709551615"), uint64(0), want{v: uint64(18446744073709551615)}},
		{"int8 overflow", n("300"), int8(0), want{bad: true}},
		{"negative for uint", n("-1"), uint(0), want{bad: true}},
		{"number for string", n("1"), "", want{bad: true}},
		{"interface gets float64", n("7"), any(nil), want{v: 7.0}},
		{"float64 to int, from encoding/json", 5.0, int(0), want{v: 5}},
		{"float64 with a fraction to int", 2.5, int(0), want{v: 2}},
		{"float64 to float32", 0.25, float32(0), want{v: float32(0.25)}},
		{"string", "x", "", want{v: "x"}},
		{"string for int", "x", int(0), want{bad: true}},
		{"list as encoding/json", []any{n("1"), "a"}, []interface{}{}, want{v: []interface{}{1.0, "a"}}},
		{"object as encoding/json", map[string]any{"k": n("2")}, map[string]interface{}{}, want{v: map[string]interface{}{"k": 2.0}}},
		{"None for a map", nil, map[string]interface{}{}, want{v: map[string]interface{}(nil)}},
		{"None for an int", nil, int(0), want{bad: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := reflect.TypeOf(&tt.to).Elem()
			if tt.to != nil {
				typ = reflect.TypeOf(tt.to)
			}
			got, err := convertArg(tt.in, typ)
			if tt.want.bad {
				if !errors.Is(err, ErrBadArguments) {
					t.Fatalf("convertArg(%v, %s) = %v, %v; want ErrBadArguments", tt.in, typ, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want.v, got.Interface()); diff != "" {
				t.Errorf("convertArg(%v, %s) (-want +got):\n%s", tt.in, typ, diff)
			}
		})
	}
}

func TestCallFunc(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		fn      any
		args    []any
		want    any
		wantErr error
	}{
		{"value", func(a, b int) int { return a + b }, []any{json.Number("2"), json.Number("3")}, int64(5), nil},
		{"value and nil error", func(s string) (string, error) { return s + "!", nil }, []any{"hi"}, "hi!", nil},
		{"error result fails the task", func() (int, error) { return 0, boom }, nil, nil, boom},
		{"no result", func() {}, nil, nil, nil},
		{"too many args", func(a int) int { return a }, []any{json.Number("1"), json.Number("2")}, nil, ErrBadArguments},
		{"too few args", func(a, b int) int { return a }, []any{json.Number("1")}, nil, ErrBadArguments},
		{"variadic", func(a ...int) int { return len(a) }, []any{json.Number("1")}, nil, ErrBadArguments},
		{"struct result is nil, as GetRealValue gives", func() struct{} { return struct{}{} }, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runTask(tt.fn, tt.args, nil)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := runTask(func(a int) int { return a }, []any{json.Number("1")}, map[string]any{"b": json.Number("2")}); !errors.Is(err, ErrBadArguments) {
		t.Errorf("kwargs to a function task: err = %v, want ErrBadArguments", err)
	}
	if _, err := runTask(42, nil, nil); !errors.Is(err, ErrBadArguments) {
		t.Errorf("registered int: err = %v, want ErrBadArguments", err)
	}
}

type kwTask struct{ a float64 }

func (k *kwTask) ParseKwargs(kw map[string]interface{}) error {
	a, ok := kw["a"].(float64)
	if !ok {
		return errors.New("a is not a float64")
	}
	k.a = a
	return nil
}

func (k *kwTask) RunTask() (interface{}, error) { return k.a * 2, nil }

// TestCeleryTaskRunsOnACopy: ParseKwargs writes a per-run copy, never the registered value that
// concurrent runs share (gocelery's data race).
func TestCeleryTaskRunsOnACopy(t *testing.T) {
	reg := &kwTask{}
	got, err := runTask(reg, nil, map[string]any{"a": json.Number("21")})
	if err != nil || got != 42.0 {
		t.Fatalf("runTask = %v, %v; want 42", got, err)
	}
	if reg.a != 0 {
		t.Errorf("the registered task was written: a = %v", reg.a)
	}
	if _, err := runTask(reg, nil, map[string]any{"a": "x"}); err == nil {
		t.Error("ParseKwargs error was not returned")
	}
}
