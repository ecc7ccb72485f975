package gocelery

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"strconv"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// plainJSON turns a value decoded by the engine (numbers as json.Number, exact integers) into
// what encoding/json gives for an interface{}: numbers as float64, objects as
// map[string]interface{}, arrays as []interface{}. gocelery's users type-assert to float64
// (its documented ParseKwargs does), so this is what they receive.
func plainJSON(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return string(x)
		}
		return f
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plainJSON(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = plainJSON(e)
		}
		return out
	case nil, string, bool, float64:
		return x
	default:
		// Integers, *big.Int and anything with its own JSON form: round-trip through
		// encoding/json, as a value stored and read back would be.
		raw, err := json.Marshal(x)
		if err != nil {
			return x
		}
		var out any
		if err := json.Unmarshal(raw, &out); err != nil {
			return x
		}
		return out
	}
}

// convertArg makes the value the engine decoded for one positional argument fit parameter
// type t. gocelery converted a JSON number to int (dropping any fraction) and to float32; so
// does this, and it also fills the other integer and float kinds, exactly when the number is an
// integer that fits. Anything else must already be assignable (strings, bools, []interface{},
// map[string]interface{} in encoding/json's shapes); otherwise the error wraps ErrBadArguments.
func convertArg(v any, t reflect.Type) (reflect.Value, error) {
	switch n := v.(type) {
	case json.Number:
		return convertNumber(n, t)
	case float64: // from a CeleryBroker that decodes with encoding/json
		return convertNumber(json.Number(strconv.FormatFloat(n, 'f', -1, 64)), t)
	}
	pv := plainJSON(v)
	if pv == nil {
		switch t.Kind() {
		case reflect.Interface, reflect.Map, reflect.Slice, reflect.Pointer:
			return reflect.Zero(t), nil
		}
		return reflect.Value{}, fmt.Errorf("%w: None for a %s parameter", ErrBadArguments, t)
	}
	rv := reflect.ValueOf(pv)
	if rv.Type().AssignableTo(t) {
		return rv, nil
	}
	return reflect.Value{}, fmt.Errorf("%w: %T for a %s parameter", ErrBadArguments, pv, t)
}

func convertNumber(n json.Number, t reflect.Type) (reflect.Value, error) {
	out := reflect.New(t).Elem()
	s := string(n)
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			// Not an integer literal: gocelery's int(float64) truncation.
			f, ferr := strconv.ParseFloat(s, 64)
			if ferr != nil || math.IsNaN(f) || f < math.MinInt64 || f >= math.MaxInt64 {
				return reflect.Value{}, fmt.Errorf("%w: %s does not fit %s", ErrBadArguments, s, t)
			}
			i = int64(f)
		}
		if out.OverflowInt(i) {
			return reflect.Value{}, fmt.Errorf("%w: %s overflows %s", ErrBadArguments, s, t)
		}
		out.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil || out.OverflowUint(u) {
			return reflect.Value{}, fmt.Errorf("%w: %s does not fit %s", ErrBadArguments, s, t)
		}
		out.SetUint(u)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return reflect.Value{}, fmt.Errorf("%w: %s does not fit %s", ErrBadArguments, s, t)
		}
		out.SetFloat(f)
	case reflect.Interface:
		rv := reflect.ValueOf(plainJSON(n))
		if !rv.Type().AssignableTo(t) {
			return reflect.Value{}, fmt.Errorf("%w: number %s for a %s parameter", ErrBadArguments, s, t)
		}
		return rv, nil
	default:
		if t == reflect.TypeOf((*big.Int)(nil)) {
			b, ok := new(big.Int).SetString(s, 10)
			if !ok {
				return reflect.Value{}, fmt.Errorf("%w: %s is not an integer", ErrBadArguments, s)
			}
			return reflect.ValueOf(b), nil
		}
		return reflect.Value{}, fmt.Errorf("%w: number %s for a %s parameter", ErrBadArguments, s, t)
	}
	return out, nil
}

// sendCeleryMessage re-sends a message whose body is a protocol 1 task (TaskMessage.Encode)
// through send, as Celery writes it: protocol 1, its priority, and the task's id, args,
// kwargs, ETA and expiry (SendCeleryMessage of both brokers).
func sendCeleryMessage(message *CeleryMessage, send func(context.Context, string, []interface{}, map[string]interface{}, ...celerycompat.SendOption) (string, error)) error {
	tm, err := message.DecodeTaskMessage()
	if err != nil {
		return err
	}
	opts := []celerycompat.SendOption{
		celerycompat.WithProtocol(1),
		celerycompat.WithPriority(message.Properties.DeliveryInfo.Priority),
	}
	more, err := taskOptions(tm)
	if err != nil {
		return err
	}
	_, err = send(context.Background(), tm.Task, tm.Args, tm.Kwargs, append(opts, more...)...)
	return err
}
