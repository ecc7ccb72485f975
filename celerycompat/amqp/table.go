package amqp

import (
	"math"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// toTable converts protocol header values (map[string]any nested) into an amqp091 table, with
// ints as py-amqp writes them.
func toTable(m map[string]any) amqp091.Table {
	if m == nil {
		return nil
	}
	t := make(amqp091.Table, len(m))
	for k, v := range m {
		t[k] = toField(v)
	}
	return t
}

func toField(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return toTable(x)
	case amqp091.Table:
		return toTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toField(e)
		}
		return out
	case int:
		return pyInt(int64(x))
	case int64:
		return pyInt(x)
	}
	return v
}

// pyInt is n as py-amqp encodes an int: 'I' (int32) when it fits, else 'l' (int64).
func pyInt(n int64) any {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		return int32(n)
	}
	return n
}

// fromTable converts a received table into plain values: nested tables become map[string]any,
// timestamps ISO text and decimals numbers, so that protocol.Codec.DecodeParts can read them.
func fromTable(t amqp091.Table) map[string]any {
	if t == nil {
		return nil
	}
	m := make(map[string]any, len(t))
	for k, v := range t {
		m[k] = fromField(v)
	}
	return m
}

func fromField(v any) any {
	switch x := v.(type) {
	case amqp091.Table:
		return fromTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = fromField(e)
		}
		return out
	case amqp091.Decimal:
		return float64(x.Value) / math.Pow10(int(x.Scale))
	case time.Time:
		return x.UTC().Format("2006-01-02T15:04:05")
	}
	return v
}
