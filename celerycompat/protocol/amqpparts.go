package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Parts is a task message split the way AMQP 0-9-1 carries it (kombu's py-amqp transport): an
// application headers table, the basic properties, and the body. No envelope JSON and no base64
// travel on AMQP: what Redis keeps in the envelope's "headers" and "properties" objects is the
// frame's header table and property fields.
//
// Header values are plain Go values, as an AMQP field table holds them: nil, string, bool,
// int32 or int64 (int32 when the value fits, as py-amqp writes it), float64, []any and
// map[string]any. A transport converts them to and from its client library's table type.
type Parts struct {
	// Headers is the application headers table: protocol 2's task headers (lang, task, id, eta,
	// ...), plus custom headers and "compression". Protocol 1 keeps only the latter.
	Headers map[string]any
	// ContentType and ContentEncoding are the content_type and content_encoding properties.
	ContentType     string
	ContentEncoding string
	// CorrelationID is the task id, as Celery sets it; ReplyTo the caller's reply queue.
	CorrelationID string
	ReplyTo       string
	// Priority is the priority property (0..255; RabbitMQ: higher runs first).
	Priority uint8
	// DeliveryMode is 2 (persistent) or 1 (transient).
	DeliveryMode uint8
	// Expiration is the per-message TTL in milliseconds as text, "" for none.
	Expiration string
	// Body is the serialized (and, when Headers["compression"] says so, compressed) body.
	Body []byte
}

// EncodeParts returns m as AMQP parts: the body from EncodeBody (compressed like Encode does),
// headers as celery/app/amqp.py writes them, and the properties Celery sets: correlation_id
// (the task id when CorrelationID is empty), reply_to, priority and delivery_mode (2 unless set).
// DeliveryTag and DeliveryInfo are not part of an AMQP message (the broker assigns them) and may
// be empty; ExtraProperties are not carried (AMQP has a fixed set of properties) and give
// ErrEncode, so that nothing is dropped silently.
func (c Codec) EncodeParts(m *Message) (*Parts, error) {
	switch {
	case m == nil:
		return nil, encodeErrorf("nil message")
	case m.Task == "":
		return nil, encodeErrorf("headers.task: empty task name")
	case m.ID == "":
		return nil, encodeErrorf("headers.id: empty task id")
	case len(m.ExtraProperties) > 0:
		return nil, encodeErrorf("properties: AMQP has no place for extra properties (%d given)", len(m.ExtraProperties))
	case m.Priority < 0 || m.Priority > 255:
		return nil, encodeErrorf("properties.priority: %d is outside 0..255", m.Priority)
	}
	body, ct, comp, err := c.encodeWireBody(m)
	if err != nil {
		return nil, err
	}
	h, err := c.headersTable(m, comp)
	if err != nil {
		return nil, err
	}
	p := &Parts{
		Headers:         h,
		ContentType:     ct,
		ContentEncoding: contentEncodingOf(m, ct),
		CorrelationID:   m.CorrelationID,
		ReplyTo:         m.ReplyTo,
		Priority:        uint8(m.Priority),
		DeliveryMode:    uint8(m.DeliveryMode),
		Expiration:      m.Expiration,
		Body:            body,
	}
	if p.CorrelationID == "" {
		p.CorrelationID = m.ID
	}
	if m.DeliveryMode == 0 {
		p.DeliveryMode = 2
	}
	return p, nil
}

// headersTable builds the header table with the same keys and values writeHeaders writes as JSON.
func (c Codec) headersTable(m *Message, comp string) (map[string]any, error) {
	h := make(map[string]any, 24+len(m.ExtraHeaders))
	if m.Protocol != 1 {
		lang := m.Lang
		if lang == "" {
			lang = "go"
		}
		h["lang"], h["task"], h["id"] = lang, m.Task, m.ID
		h["shadow"] = strOrNil(m.Shadow)
		for k, t := range map[string]*time.Time{"eta": m.ETA, "expires": m.Expires} {
			v, err := timeHeaderValue(t)
			if err != nil {
				return nil, fmt.Errorf("headers.%s: %w", k, err)
			}
			h[k] = v
		}
		h["group"] = strOrNil(m.Group)
		h["group_index"] = nil
		if m.GroupIndex != nil {
			h["group_index"] = tableInt(int64(*m.GroupIndex))
		}
		h["retries"] = tableInt(int64(m.Retries))
		h["timelimit"] = []any{tableFloat(m.TimeLimit.Hard), tableFloat(m.TimeLimit.Soft)}
		h["root_id"], h["parent_id"] = strOrNil(m.RootID), strOrNil(m.ParentID)
		h["argsrepr"], h["kwargsrepr"] = m.ArgsRepr, m.KwargsRepr
		h["origin"] = strOrNil(m.Origin)
		h["ignore_result"] = m.IgnoreResult
		if c.PeerVersion.AtLeast(Celery53) {
			nesting := 0
			if m.ReplacedTaskNesting != nil {
				nesting = *m.ReplacedTaskNesting
			}
			h["replaced_task_nesting"] = tableInt(int64(nesting))
			var stamped any
			if m.StampedHeaders != nil {
				list := make([]any, len(m.StampedHeaders))
				for i, s := range m.StampedHeaders {
					list[i] = s
				}
				stamped = list
			}
			h["stamped_headers"] = stamped
			stamps, err := plainValue(m.Stamps)
			if err != nil {
				return nil, fmt.Errorf("headers.stamps: %w", err)
			}
			if stamps == nil {
				stamps = map[string]any{}
			}
			h["stamps"] = stamps
		}
	}
	if comp != "" {
		h["compression"] = comp
	}
	if m.Redelivered {
		h["redelivered"] = true
	}
	for k, raw := range m.ExtraHeaders {
		if (m.Protocol == 1 && (k == "task" || k == "compression" || k == "redelivered")) ||
			(m.Protocol != 1 && isHeader2(k)) {
			return nil, encodeErrorf("headers.%s: extra key repeats a modelled one", k)
		}
		v, err := tableFromJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("%w: headers.%s: %w", ErrEncode, k, err)
		}
		h[k] = v
	}
	return h, nil
}

// timeHeaderValue is an eta or expires header: Python's isoformat, or nil.
func timeHeaderValue(t *time.Time) (any, error) {
	if t == nil {
		return nil, nil
	}
	if !pyTimeRangeOK(*t) {
		return nil, encodeErrorf("time %s is outside Python's datetime range", *t)
	}
	return PyISOFormat(*t), nil
}

// tableInt is n as py-amqp puts an int in a table: signed 32 bits when it fits, else 64.
func tableInt(n int64) any {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		return int32(n)
	}
	return n
}

// tableFloat is a time limit: whole seconds as an int (as Python producers send them), else a
// float, nil when unset.
func tableFloat(f *float64) any {
	switch {
	case f == nil:
		return nil
	case *f == math.Trunc(*f) && math.Abs(*f) < 1e15:
		return tableInt(int64(*f))
	}
	return *f
}

// plainValue turns v (as held in a Message) into table values through its JSON form.
func plainValue(v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	if m, ok := v.(map[string]any); ok && m == nil {
		return nil, nil
	}
	raw, err := AppendJSON(nil, v, 2, true)
	if err != nil {
		return nil, err
	}
	return tableFromJSON(raw)
}

// tableFromJSON decodes raw JSON into table values; numbers become int32, int64 or float64.
func tableFromJSON(raw []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return numbersToTable(v), nil
}

func numbersToTable(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return tableInt(n)
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = numbersToTable(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = numbersToTable(x[k])
		}
	}
	return v
}

// DecodeParts decodes AMQP parts into a Message through the same decoder as Decode: it writes the
// kombu envelope the parts stand for (body base64, the headers table as "headers", the
// properties, and delivery_info from exchange, routingKey and redelivered) and decodes that, so
// protocol 2 and protocol 1 bodies, content types, compression and size limits behave exactly
// as on Redis. It returns the envelope too: a transport keeps it as the delivery's raw bytes.
// Header values must be those Parts documents (plus int, int8, int16, uint8, uint16, float32 and
// []byte, read as text); any other gives a *DecodeError naming the header.
func (c Codec) DecodeParts(p *Parts, exchange, routingKey, tag string, redelivered bool) (*Message, []byte, error) {
	env, err := c.envelopeOf(p, exchange, routingKey, tag, redelivered)
	if err != nil {
		return nil, env, err
	}
	m, err := c.Decode(env)
	if err != nil {
		return nil, env, err
	}
	m.Redelivered = m.Redelivered || redelivered
	return m, env, nil
}

// envelopeOf writes the kombu envelope JSON for p.
func (c Codec) envelopeOf(p *Parts, exchange, routingKey, tag string, redelivered bool) ([]byte, error) {
	if len(p.Body) > c.maxBody() {
		return nil, &DecodeError{Field: "body", Err: fmt.Errorf("%w: %d bytes, limit %d", ErrBodyTooLarge, len(p.Body), c.maxBody())}
	}
	b := make([]byte, 0, base64.StdEncoding.EncodedLen(len(p.Body))+512)
	b = append(b, `{"body": "`...)
	b = base64.StdEncoding.AppendEncode(b, p.Body)
	b = append(b, `", "content-encoding": `...)
	b = appendStrOrNull(b, p.ContentEncoding)
	b = append(b, `, "content-type": `...)
	b = appendStrOrNull(b, p.ContentType)
	b = append(b, `, "headers": {`...)
	keys := sortedKeys(p.Headers)
	for i, k := range keys {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = AppendPyString(b, k)
		b = append(b, ": "...)
		v, err := jsonable(p.Headers[k])
		if err == nil {
			b, err = AppendJSON(b, v, 2, false)
		}
		if err != nil {
			return nil, &DecodeError{Field: "headers." + k, Err: err}
		}
	}
	b = append(b, `}, "properties": {"correlation_id": `...)
	b = appendStrOrNull(b, p.CorrelationID)
	b = append(b, `, "reply_to": `...)
	b = appendStrOrNull(b, p.ReplyTo)
	b = append(b, `, "delivery_mode": `...)
	b = strconv.AppendInt(b, int64(p.DeliveryMode), 10)
	if p.Expiration != "" {
		b = append(b, `, "expiration": `...)
		b = AppendPyString(b, p.Expiration)
	}
	b = append(b, `, "delivery_info": {"exchange": `...)
	b = AppendPyString(b, exchange)
	b = append(b, `, "routing_key": `...)
	b = AppendPyString(b, routingKey)
	if redelivered {
		b = append(b, `, "redelivered": true`...)
	}
	b = append(b, `}, "priority": `...)
	b = strconv.AppendInt(b, int64(p.Priority), 10)
	b = append(b, `, "body_encoding": "base64", "delivery_tag": `...)
	b = AppendPyString(b, tag)
	b = append(b, "}}"...)
	return b, nil
}

func appendStrOrNull(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return AppendPyString(b, s)
}

// jsonable converts a table value to what AppendJSON writes.
func jsonable(v any) (any, error) {
	switch x := v.(type) {
	case nil, string, bool, int, int32, int64, float64:
		return v, nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case float32:
		return float64(x), nil
	case []byte:
		return string(x), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			var err error
			if out[i], err = jsonable(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			var err error
			if out[k], err = jsonable(e); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported table value of type %T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
