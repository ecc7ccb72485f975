package gocelery

import (
	"fmt"
	"reflect"
	"sort"
)

var errorType = reflect.TypeOf((*error)(nil)).Elem()

// runTask runs a registered task: a CeleryTask gets the kwargs, a function the args.
func runTask(task interface{}, args []any, kwargs map[string]any) (any, error) {
	if ct, ok := task.(CeleryTask); ok {
		ct = freshCopy(ct)
		kw, _ := plainJSON(kwargs).(map[string]interface{})
		if kw == nil {
			kw = map[string]interface{}{}
		}
		if err := ct.ParseKwargs(kw); err != nil {
			return nil, err
		}
		return ct.RunTask()
	}
	fn := reflect.ValueOf(task)
	if fn.Kind() != reflect.Func {
		return nil, fmt.Errorf("%w: registered %T is neither a CeleryTask nor a function", ErrBadArguments, task)
	}
	if len(kwargs) > 0 {
		// Python raises TypeError for a keyword the function does not take; dropping them
		// silently (as gocelery did) would run the task on the wrong arguments.
		return nil, fmt.Errorf("%w: a function task takes positional arguments only, got keyword arguments %v", ErrBadArguments, keys(kwargs))
	}
	return callFunc(fn, args)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// freshCopy gives each run its own copy of a task registered as a pointer to a struct, so
// ParseKwargs on one run never writes fields another run is reading.
func freshCopy(ct CeleryTask) CeleryTask {
	v := reflect.ValueOf(ct)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return ct
	}
	cp := reflect.New(v.Elem().Type())
	cp.Elem().Set(v.Elem())
	if c, ok := cp.Interface().(CeleryTask); ok {
		return c
	}
	return ct
}

// callFunc calls fn with args converted to its parameter types. Its first result is the task's
// value (as GetRealValue gives it); a non-nil error as its last result fails the task.
func callFunc(fn reflect.Value, args []any) (any, error) {
	t := fn.Type()
	if t.IsVariadic() {
		return nil, fmt.Errorf("%w: variadic functions are not supported", ErrBadArguments)
	}
	if t.NumIn() != len(args) {
		return nil, fmt.Errorf("%w: the task takes %d positional arguments but %d were given", ErrBadArguments, t.NumIn(), len(args))
	}
	in := make([]reflect.Value, len(args))
	for i, a := range args {
		v, err := convertArg(a, t.In(i))
		if err != nil {
			return nil, fmt.Errorf("argument %d: %w", i, err)
		}
		in[i] = v
	}
	out := fn.Call(in)
	if n := len(out); n > 0 && t.Out(n-1) == errorType {
		if !out[n-1].IsNil() {
			err, _ := out[n-1].Interface().(error)
			return nil, err
		}
		out = out[:n-1]
	}
	if len(out) == 0 {
		return nil, nil
	}
	return GetRealValue(&out[0]), nil
}
