package celerycompat_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// req builds a request whose numbers are json.Number, as the codec decodes them.
func bindReq(t *testing.T, args, kwargs string) *cc.Request {
	t.Helper()
	r := &cc.Request{Task: "tasks.add"}
	dec := func(s string, dst any) {
		d := json.NewDecoder(strings.NewReader(s))
		d.UseNumber()
		if err := d.Decode(dst); err != nil {
			t.Fatal(err)
		}
	}
	dec(args, &r.Args)
	dec(kwargs, &r.Kwargs)
	return r
}

// Numbers bind with Python's int semantics: exact integers in int, int64, uint64 and *big.Int,
// int64 (or *big.Int) in interfaces, never a silent rounding.
func TestBindPythonNumbers(t *testing.T) {
	type nums struct {
		I   int            `json:"i"`
		I64 int64          `json:"i64"`
		U64 uint64         `json:"u64"`
		Big *big.Int       `json:"big"`
		F   float64        `json:"f"`
		Any any            `json:"any"`
		L   []any          `json:"l"`
		M   map[string]any `json:"m"`
	}
	r := bindReq(t, `[1, 4611686018427387905, 18446744073709551615, 123456789012345678901234567890, 2.5]`,
		`{"any": 4611686018427387905, "l": [1, 2.5, 99999999999999999999], "m": {"a": 3}}`)
	var got nums
	if err := cc.Bind(r, []string{"i", "i64", "u64", "big", "f"}, &got); err != nil {
		t.Fatal(err)
	}
	wantBig, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	l2, _ := new(big.Int).SetString("99999999999999999999", 10)
	want := nums{I: 1, I64: 1<<62 + 1, U64: 1<<64 - 1, Big: wantBig, F: 2.5, Any: int64(1<<62 + 1),
		L: []any{int64(1), 2.5, l2}, M: map[string]any{"a": int64(3)}}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b *big.Int) bool { return a.Cmp(b) == 0 })); d != "" {
		t.Fatalf("bound (-want +got):\n%s", d)
	}
	// int + int = int, as in Python.
	if s := got.Any.(int64) + got.L[0].(int64); s != 1<<62+2 {
		t.Fatalf("sum %d", s)
	}
}

func TestBindRefusesLossyNumbers(t *testing.T) {
	type f struct {
		F float64 `json:"f"`
	}
	type i struct {
		I int64 `json:"i"`
	}
	for name, tc := range map[string]struct {
		args string
		dst  any
	}{
		"2**62+1 into float64": {`[4611686018427387905]`, &f{}},
		"2**64 into int64":     {`[18446744073709551616]`, &i{}},
		"2.5 into int64":       {`[2.5]`, &i{}},
	} {
		t.Run(name, func(t *testing.T) {
			params := []string{"f"}
			if _, ok := tc.dst.(*i); ok {
				params = []string{"i"}
			}
			err := cc.Bind(bindReq(t, tc.args, `{}`), params, tc.dst)
			var ae *cc.ArgumentError
			if !errors.As(err, &ae) {
				t.Fatalf("got %v, want *ArgumentError", err)
			}
		})
	}
	var ok f
	if err := cc.Bind(bindReq(t, `[9007199254740992]`, `{}`), []string{"f"}, &ok); err != nil || ok.F != 1<<53 {
		t.Fatalf("2**53 into float64: %v %v", ok.F, err)
	}
}

// A missing required argument is Python's TypeError, worded as Python words it; omitempty
// marks a parameter with a default.
func TestBindMissingRequired(t *testing.T) {
	type args struct {
		X     int  `json:"x"`
		Y     int  `json:"y"`
		Z     int  `json:"z"`
		Debug bool `json:"debug,omitempty"`
	}
	for _, tc := range []struct {
		args, kwargs, want string
	}{
		{`[1]`, `{}`, "add() missing 2 required positional arguments: 'y' and 'z'"},
		{`[1, 2]`, `{}`, "add() missing 1 required positional argument: 'z'"},
		{`[1, 2]`, `{"w": 3}`, "add() got an unexpected keyword argument 'w'"},
	} {
		var a args
		err := cc.Bind(bindReq(t, tc.args, tc.kwargs), []string{"x", "y", "z"}, &a)
		var ae *cc.ArgumentError
		if !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Bind(%s, %s) = %v, want %q", tc.args, tc.kwargs, err, tc.want)
			continue
		}
		if te := ae.TaskError(); te.ExcType != "TypeError" || te.ExcModule != "builtins" {
			t.Errorf("stored as %s.%s, want builtins.TypeError", te.ExcModule, te.ExcType)
		}
	}
	var a args
	if err := cc.Bind(bindReq(t, `[1, 2, 3]`, `{}`), []string{"x", "y", "z"}, &a); err != nil || a.Debug {
		t.Fatalf("optional debug left out: %v %+v", err, a)
	}
}

// Register checks Typed's parameter names against T's json tags.
func TestRegisterChecksTypedParams(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{})
	type args struct {
		TaskID string `json:"task_id"`
		Data   any    `json:"data"`
	}
	fn := func(ctx context.Context, req *cc.Request, a args) (any, error) { return nil, nil }
	if err := w.Register("tasks.typo", cc.Typed(fn, "task_id", "dta")); !errors.Is(err, cc.ErrInvalidConfig) || !strings.Contains(err.Error(), "dta") {
		t.Fatalf("typo: %v, want ErrInvalidConfig naming dta", err)
	}
	if err := w.Register("tasks.ok", cc.Typed(fn, "task_id", "data")); err != nil {
		t.Fatal(err)
	}
	notStruct := func(ctx context.Context, req *cc.Request, a int) (any, error) { return nil, nil }
	if err := w.Register("tasks.int", cc.Typed(notStruct, "x")); !errors.Is(err, cc.ErrInvalidConfig) {
		t.Fatalf("non-struct T: %v, want ErrInvalidConfig", err)
	}
}
