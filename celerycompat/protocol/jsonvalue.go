package protocol

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// kombu ≥5.3 JSON markers ({"__type__": T, "__value__": V}, kombu/utils/json.py) in both
// directions, and the value-level API: UnmarshalValue and MarshalValue.

// decodeMarker turns the value of a {"__type__": t, "__value__": v} object into a Go value, as
// kombu ≥5.3's object_hook does; an unknown type is an error there too.
func decodeMarker(t, v any) (any, error) {
	typ, ok := t.(string)
	if !ok {
		return nil, fmt.Errorf("__type__ is %s, want a string", jsonKind(t))
	}
	if typ == "uuid" {
		return decodeUUIDMarker(v)
	}
	s, isStr := v.(string)
	if n, ok := v.(json.Number); ok && typ == "decimal" {
		s, isStr = string(n), true
	}
	if !isStr {
		return nil, fmt.Errorf("%s marker value is %s, want a string", typ, jsonKind(v))
	}
	switch typ {
	case "datetime":
		return parsePyTime(s)
	case "date":
		t, err := parsePyTime(s)
		if err != nil {
			return nil, err
		}
		y, mo, d := t.Date()
		return Date{Year: y, Month: mo, Day: d}, nil
	case "time":
		if err := checkTimeOfDay(s); err != nil {
			return nil, fmt.Errorf("time %q: %v", s, err)
		}
		return TimeOfDay{Value: s}, nil
	case "decimal":
		if err := checkDecimal(s); err != nil {
			return nil, err
		}
		return Decimal(s), nil
	case "bytes":
		return []byte(s), nil
	case "base64":
		return base64.StdEncoding.DecodeString(s)
	}
	return nil, fmt.Errorf("unsupported __type__ %q", typ)
}

// decodeUUIDMarker reads uuid.UUID(**value): {"hex": ..., "version": n or null}.
func decodeUUIDMarker(v any) (any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("uuid marker value is %s, want an object", jsonKind(v))
	}
	var hexText string
	version := 0
	for k, x := range m {
		switch k {
		case "hex":
			if hexText, ok = x.(string); !ok {
				return nil, errors.New("uuid marker hex is not a string")
			}
		case "version":
			if x == nil {
				continue
			}
			n, ok := x.(json.Number)
			iv, err := strconv.Atoi(string(n))
			if !ok || err != nil || iv < 1 || iv > 8 {
				return nil, fmt.Errorf("uuid marker version %v is not 1..8", x)
			}
			version = iv
		default:
			return nil, fmt.Errorf("uuid marker has unexpected key %q", k)
		}
	}
	hex, err := uuidHex(hexText)
	if err != nil {
		return nil, err
	}
	if version != 0 {
		hex = uuidSetVersion(hex, version)
	}
	return canonicalUUID(hex), nil
}

// jsonKind names the JSON type of a decoded value, for error messages.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	case time.Time:
		return "a datetime"
	}
	return fmt.Sprintf("a %T", v)
}

// UnmarshalValue decodes one JSON value (a result, an argument, a header) with kombu markers
// converted to Go values: datetime → time.Time, date → Date, time → TimeOfDay, decimal → Decimal,
// uuid → UUID, bytes and base64 → []byte. Numbers are json.Number, objects map[string]any, arrays
// []any. Errors are *DecodeError with Field "value".
func (c Codec) UnmarshalValue(data []byte) (any, error) {
	p := jsonScanner{s: string(data)}
	v, err := p.value()
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return nil, &DecodeError{Field: "value", Err: err}
	}
	return v, nil
}

// marker writes text as a string: inside a kombu marker for ≥5.3 peers, bare for 5.2.
func (w *jsonWriter) marker(typ string, text []byte, depth int) error {
	if w.markers {
		if _, err := w.open(depth); err != nil {
			return err
		}
		w.b = append(w.b, `{"__type__": "`...)
		w.b = append(w.b, typ...)
		w.b = append(w.b, `", "__value__": `...)
		w.b = AppendPyString(w.b, stringView(text))
		w.b = append(w.b, '}')
		return nil
	}
	w.b = AppendPyString(w.b, stringView(text))
	return nil
}

func (w *jsonWriter) time(t time.Time, depth int) error {
	if !pyTimeRangeOK(t) {
		return encodeErrorf("time %s is outside Python's datetime range", t)
	}
	var buf [40]byte
	iso := AppendPyISO(buf[:0], t)
	if !w.markers && strings.HasSuffix(stringView(iso), "+00:00") {
		iso = append(iso[:len(iso)-6], 'Z') // kombu 5.2 style
	}
	return w.marker("datetime", iso, depth)
}

func (w *jsonWriter) uuid(u UUID, depth int) error {
	hex, err := uuidHex(string(u))
	if err != nil {
		return encodeErrorf("%v", err)
	}
	if !w.markers {
		w.b = AppendPyString(w.b, string(canonicalUUID(hex)))
		return nil
	}
	d, err := w.open(depth)
	if err == nil {
		_, err = w.open(d)
	}
	if err != nil {
		return err
	}
	w.b = append(w.b, `{"__type__": "uuid", "__value__": {"hex": "`...)
	w.b = append(w.b, hex...)
	w.b = append(w.b, `"}}`...)
	return nil
}

func (w *jsonWriter) bytes(b []byte, depth int) error {
	if b == nil {
		w.b = append(w.b, "null"...)
		return nil
	}
	if !w.markers {
		return encodeErrorf("[]byte needs a kombu 5.3+ peer (kombu 5.2 cannot encode bytes)")
	}
	if utf8.Valid(b) {
		return w.marker("bytes", b, depth)
	}
	return w.marker("base64", base64.StdEncoding.AppendEncode(nil, b), depth)
}

// MarshalValue encodes v as JSON for the configured peer: kombu ≥5.3 markers for time.Time, Date,
// TimeOfDay, Decimal, UUID and []byte when PeerVersion is 5.3 or later, kombu 5.2 strings otherwise
// ([]byte is then refused). Maps, slices and pointers are walked to find those values; structs and
// types with their own MarshalJSON go through encoding/json. json.Number and json.RawMessage are
// written as they are, after validation. A map with exactly the keys __type__ and __value__ is
// refused, since a kombu ≥5.3 reader would take it for a marker. Errors wrap ErrEncode.
func (c Codec) MarshalValue(v any) ([]byte, error) {
	w := jsonWriter{markers: c.PeerVersion.AtLeast(Celery53)}
	if err := w.value(v, 0); err != nil {
		return nil, err
	}
	return w.b, nil
}
