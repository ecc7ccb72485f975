package protocol

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// JSON writing, the way Python's json.dumps writes with kombu's defaults: ", " and ": "
// separators and ensure_ascii escaping, so what Go writes reads (and looks) like what Python
// writes. Map keys are sorted (Go maps have no order; Python keeps insertion order).

// PyDict is a dict whose keys are written in this order (Python's insertion order): what the
// JSON and msgpack writers use where Celery's key order matters (headers, events, replies).
type PyDict []PyItem

// PyItem is one key and value of a PyDict.
type PyItem struct {
	Key   string
	Value any
}

// jsonWriter appends JSON to b.
type jsonWriter struct {
	b []byte
	// markers writes typed values as kombu ≥5.3 {"__type__", "__value__"} markers; without it they
	// are written as kombu 5.2 does (ISO strings, "Z" for UTC) and []byte is refused.
	markers bool
}

func encodeErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrEncode, fmt.Sprintf(format, args...))
}

func (w *jsonWriter) open(depth int) (int, error) {
	if depth >= maxNesting {
		return 0, encodeErrorf("nesting deeper than %d", maxNesting)
	}
	return depth + 1, nil
}

// value writes v; depth is the number of arrays and objects around it.
func (w *jsonWriter) value(v any, depth int) error {
	switch x := v.(type) {
	case nil:
		w.b = append(w.b, "null"...)
	case string:
		w.b = AppendPyString(w.b, x)
	case bool:
		w.b = strconv.AppendBool(w.b, x)
	case json.Number:
		return w.number(x)
	case int:
		w.b = strconv.AppendInt(w.b, int64(x), 10)
	case int64:
		w.b = strconv.AppendInt(w.b, x, 10)
	case int32:
		w.b = strconv.AppendInt(w.b, int64(x), 10)
	case uint64:
		w.b = strconv.AppendUint(w.b, x, 10)
	case float64:
		w.b = AppendPyFloat(w.b, x, 64)
	case float32:
		w.b = AppendPyFloat(w.b, float64(x), 32)
	case []any:
		if x == nil {
			w.b = append(w.b, "null"...)
			return nil
		}
		d, err := w.open(depth)
		if err != nil {
			return err
		}
		w.b = append(w.b, '[')
		for i, e := range x {
			if i > 0 {
				w.b = append(w.b, ", "...)
			}
			if err := w.value(e, d); err != nil {
				return err
			}
		}
		w.b = append(w.b, ']')
	case map[string]any:
		return writeMap(w, x, depth)
	case PyDict:
		d, err := w.open(depth)
		if err != nil {
			return err
		}
		w.b = append(w.b, '{')
		for i, it := range x {
			if i > 0 {
				w.b = append(w.b, ", "...)
			}
			w.b = AppendPyString(w.b, it.Key)
			w.b = append(w.b, ": "...)
			if err := w.value(it.Value, d); err != nil {
				return err
			}
		}
		w.b = append(w.b, '}')
	case []string:
		return writeList(w, x, depth)
	case map[string]string:
		return writeMap(w, x, depth)
	case time.Time:
		return w.time(x, depth)
	case *time.Time:
		if x == nil {
			w.b = append(w.b, "null"...)
			return nil
		}
		return w.time(*x, depth)
	case Date:
		if !x.valid() {
			return encodeErrorf("invalid date %d-%d-%d", x.Year, x.Month, x.Day)
		}
		return w.marker("date", appendPyDate(nil, x.Year, x.Month, x.Day), depth)
	case TimeOfDay:
		if err := checkTimeOfDay(x.Value); err != nil {
			return encodeErrorf("time of day %q: %v", x.Value, err)
		}
		return w.marker("time", bytesView(x.Value), depth)
	case Decimal:
		if err := checkDecimal(string(x)); err != nil {
			return encodeErrorf("%v", err)
		}
		return w.marker("decimal", bytesView(string(x)), depth)
	case UUID:
		return w.uuid(x, depth)
	case []byte:
		return w.bytes(x, depth)
	case json.RawMessage:
		return w.raw(x, depth)
	case Signature:
		return w.value(sigDict(&x), depth)
	case *Signature:
		if x == nil {
			w.b = append(w.b, "null"...)
			return nil
		}
		return w.value(sigDict(x), depth)
	case []Signature:
		return w.value(sigList(x), depth)
	default:
		return w.reflectValue(reflect.ValueOf(v), depth)
	}
	return nil
}

func writeList[E any](w *jsonWriter, x []E, depth int) error {
	if x == nil {
		w.b = append(w.b, "null"...)
		return nil
	}
	d, err := w.open(depth)
	if err != nil {
		return err
	}
	w.b = append(w.b, '[')
	for i := range x {
		if i > 0 {
			w.b = append(w.b, ", "...)
		}
		if err := w.value(x[i], d); err != nil {
			return err
		}
	}
	w.b = append(w.b, ']')
	return nil
}

func writeMap[V any](w *jsonWriter, m map[string]V, depth int) error {
	if m == nil {
		w.b = append(w.b, "null"...)
		return nil
	}
	if len(m) == 2 {
		_, ok1 := m["__type__"]
		_, ok2 := m["__value__"]
		if ok1 && ok2 {
			return encodeErrorf("a map with exactly the keys __type__ and __value__ would be read as a kombu marker")
		}
	}
	d, err := w.open(depth)
	if err != nil {
		return err
	}
	var buf [16]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.b = append(w.b, '{')
	for i, k := range keys {
		if i > 0 {
			w.b = append(w.b, ", "...)
		}
		w.b = AppendPyString(w.b, k)
		w.b = append(w.b, ": "...)
		if err := w.value(m[k], d); err != nil {
			return err
		}
	}
	w.b = append(w.b, '}')
	return nil
}

func (w *jsonWriter) number(n json.Number) error {
	if n == "" {
		w.b = append(w.b, '0')
		return nil
	}
	p := jsonScanner{s: string(n)}
	if _, err := p.number(); err != nil || p.i != len(p.s) {
		return encodeErrorf("invalid json.Number %q", string(n))
	}
	w.b = append(w.b, n...)
	return nil
}

// raw writes JSON text as it is, after checking it (and any kombu markers in it).
func (w *jsonWriter) raw(r []byte, depth int) error {
	if r == nil {
		w.b = append(w.b, "null"...)
		return nil
	}
	p := jsonScanner{s: stringView(r), depth: depth}
	raw, err := p.skip()
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return encodeErrorf("invalid json.RawMessage: %v", err)
	}
	w.b = append(w.b, raw...)
	return nil
}

var (
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// reflectValue writes what the type switch does not know: named kinds, other maps and slices,
// pointers; structs and custom marshalers go through encoding/json.
func (w *jsonWriter) reflectValue(rv reflect.Value, depth int) error {
	if !rv.IsValid() {
		w.b = append(w.b, "null"...)
		return nil
	}
	t := rv.Type()
	if t.Implements(jsonMarshalerType) || t.Implements(textMarshalerType) {
		return w.std(rv.Interface(), depth)
	}
	switch rv.Kind() {
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			w.b = append(w.b, "null"...)
			return nil
		}
		d, err := w.open(depth) // counted so that pointer cycles end
		if err != nil {
			return err
		}
		return w.value(rv.Elem().Interface(), d)
	case reflect.Bool:
		w.b = strconv.AppendBool(w.b, rv.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		w.b = strconv.AppendInt(w.b, rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		w.b = strconv.AppendUint(w.b, rv.Uint(), 10)
	case reflect.Float32:
		w.b = AppendPyFloat(w.b, rv.Float(), 32)
	case reflect.Float64:
		w.b = AppendPyFloat(w.b, rv.Float(), 64)
	case reflect.String:
		w.b = AppendPyString(w.b, rv.String())
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice {
			if rv.IsNil() {
				w.b = append(w.b, "null"...)
				return nil
			}
			if t.Elem().Kind() == reflect.Uint8 {
				return w.bytes(rv.Bytes(), depth)
			}
		}
		d, err := w.open(depth)
		if err != nil {
			return err
		}
		w.b = append(w.b, '[')
		for i := 0; i < rv.Len(); i++ {
			if i > 0 {
				w.b = append(w.b, ", "...)
			}
			if err := w.value(rv.Index(i).Interface(), d); err != nil {
				return err
			}
		}
		w.b = append(w.b, ']')
	case reflect.Map:
		if t.Key().Kind() != reflect.String || t.Key().Implements(textMarshalerType) {
			return w.std(rv.Interface(), depth)
		}
		if rv.IsNil() {
			w.b = append(w.b, "null"...)
			return nil
		}
		m := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			m[it.Key().String()] = it.Value().Interface()
		}
		return writeMap(w, m, depth)
	default:
		return w.std(rv.Interface(), depth)
	}
	return nil
}

// std writes v with encoding/json and refuses output that a kombu ≥5.3 reader would take for a
// marker.
func (w *jsonWriter) std(v any, depth int) error {
	out, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrEncode, err)
	}
	s := stringView(out)
	if strings.Contains(s, "__type__") || strings.Contains(s, `\u`) {
		p := jsonScanner{s: s, depth: depth}
		if _, err := p.value(); err != nil {
			return encodeErrorf("%T: %v", v, err)
		}
		if p.sawMarker {
			return encodeErrorf("%T encodes an object with exactly the keys __type__ and __value__, which a kombu reader would take for a marker", v)
		}
	}
	w.b = append(w.b, out...)
	return nil
}

// AppendPyString appends s as a JSON string with Python's ensure_ascii escaping.
func AppendPyString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		if c < utf8.RuneSelf {
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
		} else {
			r, n := utf8.DecodeRuneInString(s[i:])
			i += n
			if r >= 0x10000 {
				r1, r2 := utf16.EncodeRune(r)
				b = appendU4(b, r1)
				b = appendU4(b, r2)
			} else {
				b = appendU4(b, r)
			}
		}
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func appendU4(b []byte, r rune) []byte {
	const hexDigits = "0123456789abcdef"
	return append(b, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}
