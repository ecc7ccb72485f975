package protocol

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// copyLimit: an envelope up to this size is copied once and the decoded strings share the copy;
// a larger one is read in place and only the strings kept are copied, so that a Message does not
// pin a large envelope (mostly base64 text) in memory.
const copyLimit = 64 << 10

type rawMember struct{ k, raw string }

// Decode decodes one queue element (the exact bytes that were LPUSHed) into a Message.
//
// Protocol 2 is recognised by a "task" header; without one the body is read as protocol 1 and
// Protocol is 1. Headers and properties that Message does not model are kept, as raw JSON, in
// ExtraHeaders and ExtraProperties. Bodies are JSON or msgpack; pickle, YAML and any other content
// type are refused unread (*ContentTypeError). The body is un-base64ed when body_encoding is
// "base64", taken as it is when body_encoding is absent or "utf-8", and decompressed as the
// "compression" header says, all within MaxBodySize. Every error is a *DecodeError naming the
// field, for example "headers.eta", "body[1]" or "body[2].chain[0].task".
func (c Codec) Decode(raw []byte) (*Message, error) {
	p := jsonScanner{}
	if len(raw) <= copyLimit {
		p.s = string(raw)
	} else {
		p.s, p.clone = stringView(raw), true
	}
	m := &Message{}
	var (
		body               string
		haveBody, haveTask bool
		hbuf               [24]rawMember
	)
	headers := hbuf[:0]
	if p.peek() != '{' {
		return nil, &DecodeError{Field: "envelope", Err: p.unexpected("a JSON object")}
	}
	err := p.object(func(k string) error {
		var err error
		switch k {
		case "body":
			if p.peek() != '"' {
				return &DecodeError{Field: "body", Err: p.unexpected("a string")}
			}
			body, err = p.str()
			haveBody = true
		case "content-type":
			m.ContentType, err = p.strOrNull()
		case "content-encoding":
			m.ContentEncoding, err = p.strOrNull()
		case "headers":
			if p.null() {
				return nil
			}
			err = p.object(func(hk string) error {
				raw, err := p.skip()
				if err != nil {
					return fieldErr("headers."+hk, err)
				}
				haveTask = haveTask || hk == "task"
				headers = append(headers, rawMember{hk, raw})
				return nil
			})
		case "properties":
			err = decodeProperties(&p, m)
		default:
			_, err = p.skip()
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
		return nil, fieldErr("envelope", err)
	}
	if !haveBody {
		return nil, &DecodeError{Field: "body", Err: errors.New("missing")}
	}
	if m.ContentType == "" {
		m.ContentType = ContentTypeJSON
	}
	if m.ContentType != ContentTypeJSON && m.ContentType != ContentTypeMsgpack {
		return nil, &DecodeError{Field: "content-type", Err: contentTypeError(m.ContentType)}
	}
	if m.ContentEncoding == "" {
		m.ContentEncoding = contentEncodingOf(m, m.ContentType)
	}
	if haveTask {
		m.Protocol, m.UTC = 2, true
		err = decodeHeaders2(&p, headers, m)
	} else {
		m.Protocol = 1
		err = decodeHeaders1(&p, headers, m)
	}
	if err != nil {
		return nil, err
	}
	v, err := c.decodeBodyValue(m, body, p.clone)
	if err != nil {
		return nil, err
	}
	where := "headers."
	if haveTask {
		err = decodeBody2(v, m)
	} else {
		where = "body."
		err = decodeBody1(v, m)
	}
	switch {
	case err != nil:
		return nil, err
	case m.Task == "":
		return nil, &DecodeError{Field: where + "task", Err: errors.New("missing or empty")}
	case m.ID == "":
		return nil, &DecodeError{Field: where + "id", Err: errors.New("missing or empty")}
	case m.DeliveryTag == "":
		return nil, &DecodeError{Field: "properties.delivery_tag", Err: errors.New("missing or empty")}
	case m.DeliveryInfo.RoutingKey == "":
		return nil, &DecodeError{Field: "properties.delivery_info.routing_key", Err: errors.New("missing or empty")}
	}
	return m, nil
}

// decodeBodyValue undoes body_encoding and compression and deserializes the body.
func (c Codec) decodeBodyValue(m *Message, body string, aliased bool) (any, error) {
	limit := c.maxBody()
	var data []byte
	switch m.BodyEncoding {
	case "base64":
		if len(body)/4*3-2 > limit {
			return nil, &DecodeError{Field: "body", Err: fmt.Errorf("%w: base64 body of %d bytes, limit %d", ErrBodyTooLarge, len(body), limit)}
		}
		data = make([]byte, base64.StdEncoding.DecodedLen(len(body)))
		n, err := base64.StdEncoding.Decode(data, bytesView(body))
		if err != nil {
			return nil, &DecodeError{Field: "body", Err: fmt.Errorf("base64: %w", err)}
		}
		data = data[:n]
	case "", "utf-8":
		if aliased {
			data = []byte(body)
		} else {
			data = bytesView(body) // read only, like the envelope copy it points into
		}
	default:
		return nil, &DecodeError{Field: "properties.body_encoding", Err: fmt.Errorf("unsupported body encoding %q", m.BodyEncoding)}
	}
	if len(data) > limit {
		return nil, &DecodeError{Field: "body", Err: fmt.Errorf("%w: %d bytes, limit %d", ErrBodyTooLarge, len(data), limit)}
	}
	if m.Compression != "" {
		var err error
		if data, err = decompressBody(m.Compression, data, limit); err != nil {
			field := "body"
			if errors.Is(err, ErrUnsupportedCompression) {
				field = "headers.compression"
			}
			return nil, &DecodeError{Field: field, Err: err}
		}
	}
	var v any
	var err error
	if m.ContentType == ContentTypeMsgpack {
		v, err = msgpackUnmarshal(data)
	} else {
		q := jsonScanner{s: stringView(data)}
		if v, err = q.value(); err == nil {
			err = q.end()
		}
	}
	if err != nil {
		return nil, &DecodeError{Field: "body", Err: err}
	}
	return v, nil
}

func decodeHeaders2(p *jsonScanner, headers []rawMember, m *Message) error {
	for _, h := range headers {
		q := jsonScanner{s: h.raw, depth: 2, clone: p.clone}
		var err error
		switch h.k {
		case "lang":
			m.Lang, err = q.strOrNull()
		case "task":
			m.Task, err = q.strOrNull()
		case "id":
			m.ID, err = q.strOrNull()
		case "shadow":
			m.Shadow, err = q.strOrNull()
		case "eta":
			m.ETA, err = q.timeOrNull()
		case "expires":
			m.Expires, err = q.timeOrNull()
		case "group":
			m.Group, err = q.strOrNull()
		case "group_index":
			m.GroupIndex, err = q.intPtrOrNull()
		case "retries":
			m.Retries, _, err = q.intOrNull()
		case "timelimit":
			m.TimeLimit, err = q.timeLimit()
		case "root_id":
			m.RootID, err = q.strOrNull()
		case "parent_id":
			m.ParentID, err = q.strOrNull()
		case "argsrepr":
			m.ArgsRepr, err = q.strOrNull()
		case "kwargsrepr":
			m.KwargsRepr, err = q.strOrNull()
		case "origin":
			m.Origin, err = q.strOrNull()
		case "ignore_result":
			m.IgnoreResult, err = q.boolOrNull()
		case "replaced_task_nesting":
			m.ReplacedTaskNesting, err = q.intPtrOrNull()
		case "stamped_headers":
			m.StampedHeaders, err = q.stringsOrNull()
		case "stamps":
			m.Stamps, err = q.objectOrNull()
		case "compression":
			m.Compression, err = q.strOrNull()
		case "redelivered":
			m.Redelivered, err = q.boolOrNull()
		default:
			addExtra(&m.ExtraHeaders, p, h)
		}
		if err != nil {
			return fieldErr("headers."+h.k, err)
		}
	}
	return nil
}

// decodeHeaders1 reads the envelope headers of a protocol 1 message: kombu's own, and custom ones.
func decodeHeaders1(p *jsonScanner, headers []rawMember, m *Message) error {
	for _, h := range headers {
		q := jsonScanner{s: h.raw, depth: 2, clone: p.clone}
		var err error
		switch h.k {
		case "compression":
			m.Compression, err = q.strOrNull()
		case "redelivered":
			m.Redelivered, err = q.boolOrNull()
		default:
			addExtra(&m.ExtraHeaders, p, h)
		}
		if err != nil {
			return fieldErr("headers."+h.k, err)
		}
	}
	return nil
}

func addExtra(dst *map[string]json.RawMessage, p *jsonScanner, h rawMember) {
	if *dst == nil {
		*dst = make(map[string]json.RawMessage)
	}
	(*dst)[p.keep(h.k)] = json.RawMessage(h.raw)
}

func decodeProperties(p *jsonScanner, m *Message) error {
	if p.null() {
		return nil
	}
	return p.object(func(k string) error {
		var err error
		switch k {
		case "correlation_id":
			m.CorrelationID, err = p.strOrNull()
		case "reply_to":
			m.ReplyTo, err = p.strOrNull()
		case "delivery_mode":
			m.DeliveryMode, _, err = p.intOrNull()
		case "delivery_info":
			if p.null() {
				return nil
			}
			err = p.object(func(dk string) error {
				var err error
				switch dk {
				case "exchange":
					m.DeliveryInfo.Exchange, err = p.strOrNull()
				case "routing_key":
					m.DeliveryInfo.RoutingKey, err = p.strOrNull()
				case "redelivered":
					m.DeliveryInfo.Redelivered, err = p.boolOrNull()
				default:
					_, err = p.skip()
				}
				if err != nil {
					return fieldErr("properties.delivery_info."+dk, err)
				}
				return nil
			})
		case "priority":
			m.Priority, _, err = p.intOrNull()
		case "body_encoding":
			m.BodyEncoding, err = p.strOrNull()
		case "delivery_tag":
			m.DeliveryTag, err = p.strOrNull()
		case "expiration":
			if c := p.peek(); c == '-' || isDigit(c) {
				var n json.Number
				n, err = p.number()
				m.Expiration = p.keep(string(n))
			} else {
				m.Expiration, err = p.strOrNull()
			}
		default:
			var raw string
			if raw, err = p.skip(); err == nil {
				addExtra(&m.ExtraProperties, p, rawMember{k, raw})
			}
		}
		if err != nil {
			return fieldErr("properties."+k, err)
		}
		return nil
	})
}

// Typed readers for header and property values.

func (p *jsonScanner) strOrNull() (string, error) {
	switch p.peek() {
	case '"':
		s, err := p.str()
		return p.keep(s), err
	case 'n':
		if p.literal("null") {
			return "", nil
		}
	}
	return "", p.unexpected("a string or null")
}

func (p *jsonScanner) intOrNull() (int, bool, error) {
	c := p.peek()
	if c == 'n' && p.literal("null") {
		return 0, false, nil
	}
	if c == '-' || isDigit(c) {
		n, err := p.number()
		if err != nil {
			return 0, false, err
		}
		i, err := strconv.Atoi(string(n))
		if err != nil {
			return 0, false, fmt.Errorf("%s is not an integer that fits in int", n)
		}
		return i, true, nil
	}
	return 0, false, p.unexpected("an integer or null")
}

func (p *jsonScanner) boolOrNull() (bool, error) {
	switch c := p.peek(); {
	case c == 't' && p.literal("true"):
		return true, nil
	case c == 'f' && p.literal("false"), c == 'n' && p.literal("null"):
		return false, nil
	}
	return false, p.unexpected("a boolean or null")
}

// timeOrNull reads an ISO 8601 string, a kombu datetime marker, or null ("" counts as null, as in
// Celery's maybe_iso8601).
func (p *jsonScanner) timeOrNull() (*time.Time, error) {
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	return genTime(v, "")
}

func (p *jsonScanner) intPtrOrNull() (*int, error) {
	n, ok, err := p.intOrNull()
	if !ok || err != nil {
		return nil, err
	}
	return &n, nil
}

// timeLimit reads [hard, soft], each a number or null; null for the whole means neither.
func (p *jsonScanner) timeLimit() (TimeLimit, error) {
	var tl TimeLimit
	if p.null() {
		return tl, nil
	}
	i := 0
	err := p.array(func() error {
		var f *float64
		switch c := p.peek(); {
		case c == 'n' && p.literal("null"):
		case c == '-' || c == 'N' || c == 'I' || isDigit(c):
			n, err := p.number()
			if err != nil {
				return err
			}
			v, err := strconv.ParseFloat(string(n), 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				return &DecodeError{Field: "[" + strconv.Itoa(i) + "]", Err: err}
			}
			f = &v
		default:
			return &DecodeError{Field: "[" + strconv.Itoa(i) + "]", Err: p.unexpected("a number or null")}
		}
		switch i {
		case 0:
			tl.Hard = f
		case 1:
			tl.Soft = f
		}
		i++
		return nil
	})
	if err == nil && i != 2 {
		err = fmt.Errorf("%d elements, want [hard, soft]", i)
	}
	return tl, err
}

func (p *jsonScanner) stringsOrNull() ([]string, error) {
	if p.null() {
		return nil, nil
	}
	out := []string{}
	err := p.array(func() error {
		if p.peek() != '"' {
			return p.unexpected("a string")
		}
		s, err := p.str()
		out = append(out, p.keep(s))
		return err
	})
	return out, err
}

func (p *jsonScanner) objectOrNull() (map[string]any, error) {
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	return genMap(v, "")
}
