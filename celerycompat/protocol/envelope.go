package protocol

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// AppendJSON appends v to b as Python's json.dumps writes it with kombu's defaults (", " and
// ": " separators, ensure_ascii; a PyDict keeps its key order, map keys are sorted). depth is the
// number of arrays and objects already open around v, for the nesting limit. markers writes typed
// values as kombu ≥5.3 {"__type__", "__value__"} markers; without it they are written as kombu
// 5.2 does and []byte is refused with ErrEncode.
func AppendJSON(b []byte, v any, depth int, markers bool) ([]byte, error) {
	w := jsonWriter{b: b, markers: markers}
	if err := w.value(v, depth); err != nil {
		return nil, err
	}
	return w.b, nil
}

// DecodeJSON decodes data as one JSON text, converting kombu's markers as the codec does. The
// error is a cause for a *DecodeError (the caller names the field).
func DecodeJSON(data []byte) (any, error) {
	p := jsonScanner{s: string(data)}
	v, err := p.value()
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

// ScanJSONObject calls fn with each member of the JSON object in data, the value undecoded. It
// stops at the first malformed member and returns its error; members before it were passed on.
func ScanJSONObject(data []byte, fn func(key string, raw json.RawMessage)) error {
	p := jsonScanner{s: string(data)}
	return p.object(func(key string) error {
		raw, err := p.skip()
		if err == nil {
			fn(key, json.RawMessage(raw))
		}
		return err
	})
}

// DecodeEnvelope reads a kombu envelope whose body is JSON (pidbox and event messages): its
// headers and its body, base64 undone. A body that is not JSON gives a *ContentTypeError; a
// malformed envelope a *DecodeError.
func DecodeEnvelope(raw []byte) (headers map[string]any, body []byte, err error) {
	p := jsonScanner{s: string(raw)}
	var text, bodyEncoding, contentType string
	err = p.object(func(k string) error {
		var err error
		switch k {
		case "body":
			text, err = p.strOrNull()
		case "content-type":
			contentType, err = p.strOrNull()
		case "headers":
			var v any
			if v, err = p.value(); err == nil {
				headers, _ = v.(map[string]any)
			}
		case "properties":
			err = p.object(func(pk string) error {
				if pk == "body_encoding" {
					var err error
					bodyEncoding, err = p.strOrNull()
					return err
				}
				return p.skipValue()
			})
		default:
			err = p.skipValue()
		}
		if err != nil {
			return fieldErr(k, err)
		}
		return nil
	})
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return nil, nil, &DecodeError{Field: "envelope", Err: err}
	}
	if contentType != "" && contentType != ContentTypeJSON {
		return nil, nil, &ContentTypeError{ContentType: contentType, Reason: "remote control and events are JSON only"}
	}
	switch bodyEncoding {
	case "base64":
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil {
			return nil, nil, &DecodeError{Field: "body", Err: fmt.Errorf("base64: %w", err)}
		}
		return headers, b, nil
	case "", "utf-8":
		return headers, []byte(text), nil
	default:
		return nil, nil, &DecodeError{Field: "properties.body_encoding", Err: fmt.Errorf("unsupported body encoding %q", bodyEncoding)}
	}
}
