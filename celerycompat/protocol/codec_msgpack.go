package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// msgpack bodies (content type application/x-msgpack, content-encoding "binary"). Python packs
// with use_bin_type=True and unpacks with raw=False: str is text, bin is bytes. Values decode to
// the JSON model (integers and floats as json.Number, bin as []byte); kombu's JSON markers are a
// JSON-only convention and are not interpreted here. Extension types are refused.

func msgpackUnmarshal(data []byte) (any, error) {
	r := bytes.NewReader(data)
	d := msgpack.NewDecoder(r)
	v, err := mpValue(d, r, 0)
	if err != nil {
		return nil, fmt.Errorf("msgpack: %w", err)
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("msgpack: %d bytes after the value", r.Len())
	}
	return v, nil
}

func mpValue(d *msgpack.Decoder, r *bytes.Reader, depth int) (any, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case c == msgpcode.Nil:
		return nil, d.DecodeNil()
	case c == msgpcode.False || c == msgpcode.True:
		return d.DecodeBool()
	case c == msgpcode.Uint64:
		n, err := d.DecodeUint64()
		return json.Number(strconv.FormatUint(n, 10)), err
	case msgpcode.IsFixedNum(c) || c >= msgpcode.Uint8 && c <= msgpcode.Uint32 || c >= msgpcode.Int8 && c <= msgpcode.Int64:
		n, err := d.DecodeInt64()
		return json.Number(strconv.FormatInt(n, 10)), err
	case c == msgpcode.Float || c == msgpcode.Double:
		f, err := d.DecodeFloat64()
		return json.Number(AppendPyFloat(nil, f, 64)), err
	case msgpcode.IsString(c):
		return d.DecodeString()
	case msgpcode.IsBin(c):
		b, err := d.DecodeBytes()
		if b == nil && err == nil {
			b = []byte{}
		}
		return b, err
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if n > r.Len() {
			return nil, fmt.Errorf("array of %d elements in %d bytes", n, r.Len())
		}
		if depth++; depth > maxNesting {
			return nil, fmt.Errorf("nesting deeper than %d", maxNesting)
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = mpValue(d, r, depth); err != nil {
				return nil, err
			}
		}
		return out, nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		if 2*n > r.Len() {
			return nil, fmt.Errorf("map of %d entries in %d bytes", n, r.Len())
		}
		if depth++; depth > maxNesting {
			return nil, fmt.Errorf("nesting deeper than %d", maxNesting)
		}
		out := make(map[string]any, n)
		for range n {
			kc, err := d.PeekCode()
			if err != nil {
				return nil, err
			}
			if !msgpcode.IsString(kc) {
				return nil, fmt.Errorf("map key with code %#x is not a string", kc)
			}
			k, err := d.DecodeString()
			if err != nil {
				return nil, err
			}
			if out[k], err = mpValue(d, r, depth); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported msgpack code %#x (extension types are not supported)", c)
}

func msgpackMarshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	e := msgpack.NewEncoder(&buf)
	if err := mpWrite(e, v, 0); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func mpWrite(e *msgpack.Encoder, v any, depth int) error {
	var err error
	switch x := v.(type) {
	case nil:
		err = e.EncodeNil()
	case bool:
		err = e.EncodeBool(x)
	case string:
		err = e.EncodeString(x)
	case json.Number:
		err = mpNumber(e, x)
	case int:
		err = e.EncodeInt(int64(x))
	case int64:
		err = e.EncodeInt(x)
	case uint64:
		err = e.EncodeUint(x)
	case float64:
		err = e.EncodeFloat64(x)
	case []byte:
		err = e.EncodeBytes(x)
	case []any:
		if x == nil {
			return e.EncodeNil()
		}
		if depth >= maxNesting {
			return encodeErrorf("nesting deeper than %d", maxNesting)
		}
		if err := e.EncodeArrayLen(len(x)); err != nil {
			return err
		}
		for _, el := range x {
			if err := mpWrite(e, el, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		if x == nil {
			return e.EncodeNil()
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		items := make(PyDict, len(keys))
		for i, k := range keys {
			items[i] = PyItem{k, x[k]}
		}
		return mpWrite(e, items, depth)
	case PyDict:
		if depth >= maxNesting {
			return encodeErrorf("nesting deeper than %d", maxNesting)
		}
		if err := e.EncodeMapLen(len(x)); err != nil {
			return err
		}
		for _, it := range x {
			if err := e.EncodeString(it.Key); err != nil {
				return err
			}
			if err := mpWrite(e, it.Value, depth+1); err != nil {
				return err
			}
		}
	case time.Time:
		if !pyTimeRangeOK(x) {
			return encodeErrorf("time %s is outside Python's datetime range", x)
		}
		err = e.EncodeString(PyISOFormat(x))
	case Signature:
		return mpWrite(e, sigDict(&x), depth)
	default:
		// Everything else (typed values, other maps and slices, structs) takes the JSON route with
		// markers, whose decoded form holds only the cases above or values handled below.
		w := jsonWriter{markers: true}
		if err := w.value(v, depth); err != nil {
			return err
		}
		p := jsonScanner{s: stringView(w.b), depth: depth}
		val, err := p.value()
		if err != nil {
			return encodeErrorf("%v", err)
		}
		switch y := val.(type) {
		case Date:
			return e.EncodeString(string(appendPyDate(nil, y.Year, y.Month, y.Day)))
		case TimeOfDay:
			return e.EncodeString(y.Value)
		case Decimal:
			return e.EncodeString(string(y))
		case UUID:
			return e.EncodeString(string(y))
		}
		return mpWrite(e, val, depth)
	}
	if err != nil && !errors.Is(err, ErrEncode) {
		return fmt.Errorf("%w: msgpack: %w", ErrEncode, err)
	}
	return err
}

// mpNumber packs a json.Number as an integer when it has no fraction or exponent, else a float.
func mpNumber(e *msgpack.Encoder, n json.Number) error {
	s := string(n)
	if s == "" {
		return e.EncodeInt(0)
	}
	if !strings.ContainsAny(s, ".eEIN") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return e.EncodeInt(i)
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return e.EncodeUint(u)
		}
		return encodeErrorf("integer %s does not fit msgpack's 64 bits", s)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return encodeErrorf("invalid json.Number %q", s)
	}
	return e.EncodeFloat64(f)
}
