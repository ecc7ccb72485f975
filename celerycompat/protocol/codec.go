package protocol

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Codec encodes and decodes kombu envelopes holding Celery task messages. The zero value writes the
// Celery 5.2 wire format that every 5.x reader accepts. Safe for concurrent use.
//
// What Encode writes matches what Python writes byte for byte where Python's order is known: the
// envelope keys, the header and property order of celery/app/amqp.py, json.dumps separators and
// ensure_ascii escaping. Maps have no order in Go and are written with sorted keys.
type Codec struct {
	PeerVersion Version // oldest Celery that reads what we write; zero = 5.2 (no kombu markers, no 5.3 headers)
	MaxBodySize int     // limit on the decoded body bytes (after base64 and decompression); zero = 64 MiB; enforced on decode AND encode -> ErrBodyTooLarge
	// Compression compresses bodies we write: "" none, CompressionZlib; CompressionBzip2 is
	// decode-only (Encode returns ErrUnsupportedCompression). A message's own Compression, set by
	// Decode, takes precedence so a decoded message is re-encoded as it came.
	Compression string
}

// defaultMaxBodySize is the body limit of a Codec whose MaxBodySize is zero.
const defaultMaxBodySize = 64 << 20

func (c Codec) maxBody() int {
	if c.MaxBodySize <= 0 {
		return defaultMaxBodySize
	}
	return c.MaxBodySize
}

// Encode returns the envelope JSON for m, ready to LPUSH. Zero fields get Celery's defaults:
// DeliveryMode 2, CorrelationID = ID, ContentType application/json, ContentEncoding "utf-8"
// ("binary" for msgpack), Lang "go"; empty Shadow, Group, RootID, ParentID and Origin and nil
// ETA, Expires and GroupIndex are written as null. The body is always base64 (properties.body_encoding
// "base64"; kombu 5.2 cannot read anything else), whatever BodyEncoding says. Encode refuses
// (ErrEncode) a message without Task, ID, DeliveryTag or DeliveryInfo.RoutingKey, since a Python
// consumer loses such a message; DeliveryInfo.Exchange "" is valid (the default exchange).
// ExtraHeaders and ExtraProperties must be valid JSON and must not repeat a modelled key.
func (c Codec) Encode(m *Message) ([]byte, error) {
	switch {
	case m == nil:
		return nil, encodeErrorf("nil message")
	case m.Task == "":
		return nil, encodeErrorf("headers.task: empty task name")
	case m.ID == "":
		return nil, encodeErrorf("headers.id: empty task id")
	case m.DeliveryTag == "":
		return nil, encodeErrorf("properties.delivery_tag: empty (the Python consumer needs it)")
	case m.DeliveryInfo.RoutingKey == "":
		return nil, encodeErrorf("properties.delivery_info.routing_key: empty (the Python consumer loses such a message)")
	}
	body, ct, comp, err := c.encodeWireBody(m)
	if err != nil {
		return nil, err
	}
	extra := 0
	for k, v := range m.ExtraHeaders {
		extra += len(k) + len(v) + 8
	}
	for k, v := range m.ExtraProperties {
		extra += len(k) + len(v) + 8
	}
	w := jsonWriter{
		b:       make([]byte, 0, base64.StdEncoding.EncodedLen(len(body))+1024+extra),
		markers: c.PeerVersion.AtLeast(Celery53),
	}
	w.b = append(w.b, `{"body": "`...)
	w.b = base64.StdEncoding.AppendEncode(w.b, body)
	w.b = append(w.b, `", "content-encoding": `...)
	w.b = AppendPyString(w.b, contentEncodingOf(m, ct))
	w.b = append(w.b, `, "content-type": `...)
	w.b = AppendPyString(w.b, ct)
	w.b = append(w.b, `, "headers": `...)
	if err := c.writeHeaders(&w, m, comp); err != nil {
		return nil, err
	}
	w.b = append(w.b, `, "properties": `...)
	if err := writeProperties(&w, m); err != nil {
		return nil, err
	}
	w.b = append(w.b, '}')
	return w.b, nil
}

func contentEncodingOf(m *Message, ct string) string {
	if m.ContentEncoding != "" {
		return m.ContentEncoding
	}
	if ct == ContentTypeJSON {
		return "utf-8"
	}
	return "binary"
}

// encodeWireBody is the body as it goes on the wire, for either transport: EncodeBody, then
// compressed with the message's compression (Decode keeps a message's own) or else the codec's.
// It returns the compression used, for the "compression" header.
func (c Codec) encodeWireBody(m *Message) (body []byte, contentType, compression string, err error) {
	body, contentType, err = c.EncodeBody(m)
	if err != nil {
		return nil, "", "", err
	}
	compression = m.Compression
	if compression == "" {
		compression = c.Compression
	}
	if compression != "" {
		if body, err = compressBody(compression, body); err != nil {
			return nil, "", "", err
		}
	}
	return body, contentType, compression, nil
}

// EncodeBody returns m's serialized body (before compression and base64) and its content type.
// Protocol 1 messages get the protocol 1 body object.
func (c Codec) EncodeBody(m *Message) (body []byte, contentType string, err error) {
	if m == nil {
		return nil, "", encodeErrorf("nil message")
	}
	ct := m.ContentType
	if ct == "" {
		ct = ContentTypeJSON
	}
	switch ct {
	case ContentTypeJSON:
		w := jsonWriter{b: make([]byte, 0, 256), markers: c.PeerVersion.AtLeast(Celery53)}
		if err := w.body(m); err != nil {
			return nil, "", err
		}
		body = w.b
	case ContentTypeMsgpack:
		layout, err := bodyLayout(m)
		if err != nil {
			return nil, "", err
		}
		if body, err = msgpackMarshal(layout); err != nil {
			return nil, "", err
		}
	default:
		return nil, "", fmt.Errorf("%w: %w", ErrEncode, contentTypeError(ct))
	}
	if len(body) > c.maxBody() {
		return nil, "", fmt.Errorf("%w: %w: body is %d bytes, limit %d", ErrEncode, ErrBodyTooLarge, len(body), c.maxBody())
	}
	return body, ct, nil
}

func contentTypeError(ct string) *ContentTypeError {
	switch ct {
	case ContentTypePickle:
		return &ContentTypeError{ContentType: ct, Reason: "pickle is never deserialized (it runs arbitrary code)"}
	case ContentTypeYAML:
		return &ContentTypeError{ContentType: ct, Reason: "YAML is not supported"}
	}
	return &ContentTypeError{ContentType: ct, Reason: "only application/json and application/x-msgpack are supported"}
}

// isHeader2 reports whether a header is modelled by Message (for protocol 2).
func isHeader2(k string) bool {
	switch k {
	case "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
		"timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
		"replaced_task_nesting", "stamped_headers", "stamps", "compression", "redelivered":
		return true
	}
	return false
}

func isProperty(k string) bool {
	switch k {
	case "correlation_id", "reply_to", "delivery_mode", "delivery_info", "priority",
		"body_encoding", "delivery_tag", "expiration":
		return true
	}
	return false
}

func (w *jsonWriter) str(key, s string) {
	w.b = append(w.b, key...)
	w.b = AppendPyString(w.b, s)
}

func (w *jsonWriter) strOrNull(key, s string) {
	w.b = append(w.b, key...)
	if s == "" {
		w.b = append(w.b, "null"...)
	} else {
		w.b = AppendPyString(w.b, s)
	}
}

func (w *jsonWriter) num(key string, v any) error {
	w.b = append(w.b, key...)
	return w.value(v, 2)
}

// writeHeaders writes the headers object in celery/app/amqp.py order.
func (c Codec) writeHeaders(w *jsonWriter, m *Message, comp string) error {
	w.b = append(w.b, '{')
	sep := ""
	if m.Protocol != 1 {
		lang := m.Lang
		if lang == "" {
			lang = "go"
		}
		w.str(`"lang": `, lang)
		w.str(`, "task": `, m.Task)
		w.str(`, "id": `, m.ID)
		w.strOrNull(`, "shadow": `, m.Shadow)
		w.b = append(w.b, `, "eta": `...)
		if err := w.timeHeader(m.ETA); err != nil {
			return err
		}
		w.b = append(w.b, `, "expires": `...)
		if err := w.timeHeader(m.Expires); err != nil {
			return err
		}
		w.strOrNull(`, "group": `, m.Group)
		if err := w.num(`, "group_index": `, intPtrOrNil(m.GroupIndex)); err != nil {
			return err
		}
		if err := w.num(`, "retries": `, m.Retries); err != nil {
			return err
		}
		w.b = append(w.b, `, "timelimit": `...)
		w.timeLimit(m.TimeLimit)
		w.strOrNull(`, "root_id": `, m.RootID)
		w.strOrNull(`, "parent_id": `, m.ParentID)
		w.str(`, "argsrepr": `, m.ArgsRepr)
		w.str(`, "kwargsrepr": `, m.KwargsRepr)
		w.strOrNull(`, "origin": `, m.Origin)
		w.b = append(w.b, `, "ignore_result": `...)
		w.b = appendBool(w.b, m.IgnoreResult)
		if c.PeerVersion.AtLeast(Celery53) {
			nesting := 0
			if m.ReplacedTaskNesting != nil {
				nesting = *m.ReplacedTaskNesting
			}
			if err := w.num(`, "replaced_task_nesting": `, nesting); err != nil {
				return err
			}
			if err := w.num(`, "stamped_headers": `, m.StampedHeaders); err != nil {
				return err
			}
			var stamps any = m.Stamps
			if m.Stamps == nil {
				stamps = PyDict(nil)
			}
			if err := w.num(`, "stamps": `, stamps); err != nil {
				return err
			}
		}
		sep = ", "
	}
	if comp != "" {
		w.str(sep+`"compression": `, comp)
		sep = ", "
	}
	if m.Redelivered {
		w.b = append(w.b, sep+`"redelivered": true`...)
		sep = ", "
	}
	err := writeExtras(w, m.ExtraHeaders, "headers", sep, func(k string) bool {
		if m.Protocol == 1 {
			return k == "task" || k == "compression" || k == "redelivered"
		}
		return isHeader2(k)
	})
	if err != nil {
		return err
	}
	w.b = append(w.b, '}')
	return nil
}

// timeHeader writes an eta or expires header: Python's isoformat, or null.
func (w *jsonWriter) timeHeader(t *time.Time) error {
	if t == nil {
		w.b = append(w.b, "null"...)
		return nil
	}
	if !pyTimeRangeOK(*t) {
		return encodeErrorf("time %s is outside Python's datetime range", *t)
	}
	w.b = append(w.b, '"')
	w.b = AppendPyISO(w.b, *t)
	w.b = append(w.b, '"')
	return nil
}

// body writes m's JSON body; protocol 2 without callbacks takes a short path.
func (w *jsonWriter) body(m *Message) error {
	e := &m.Embed
	if m.Protocol == 1 || e.Callbacks != nil || e.Errbacks != nil || e.Chain != nil || e.Chord != nil {
		layout, err := bodyLayout(m)
		if err != nil {
			return err
		}
		return w.value(layout, 0)
	}
	w.b = append(w.b, '[')
	if m.Args == nil {
		w.b = append(w.b, "[]"...)
	} else if err := w.value(m.Args, 1); err != nil {
		return err
	}
	w.b = append(w.b, ", "...)
	if m.Kwargs == nil {
		w.b = append(w.b, "{}"...)
	} else if err := w.value(m.Kwargs, 1); err != nil {
		return err
	}
	w.b = append(w.b, `, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`...)
	return nil
}

// timeLimit writes [hard, soft]; whole seconds as integers, as Python producers send them.
func (w *jsonWriter) timeLimit(tl TimeLimit) {
	w.b = append(w.b, '[')
	for i, f := range [2]*float64{tl.Hard, tl.Soft} {
		if i > 0 {
			w.b = append(w.b, ", "...)
		}
		switch {
		case f == nil:
			w.b = append(w.b, "null"...)
		case *f == math.Trunc(*f) && math.Abs(*f) < 1e15:
			w.b = strconv.AppendInt(w.b, int64(*f), 10)
		default:
			w.b = AppendPyFloat(w.b, *f, 64)
		}
	}
	w.b = append(w.b, ']')
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// writeExtras writes raw members in sorted key order after sep, refusing reserved keys.
func writeExtras(w *jsonWriter, extras map[string]json.RawMessage, where, sep string, reserved func(string) bool) error {
	if len(extras) == 0 {
		return nil
	}
	var buf [16]string
	keys := buf[:0]
	for k := range extras {
		if reserved(k) {
			return encodeErrorf("%s.%s: extra key repeats a modelled one", where, k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w.b = append(w.b, sep...)
		sep = ", "
		w.b = AppendPyString(w.b, k)
		w.b = append(w.b, ": "...)
		if err := w.raw(extras[k], 2); err != nil {
			return fmt.Errorf("%s.%s: %w", where, k, err)
		}
	}
	return nil
}

// writeProperties writes the properties object in the order Python ends up with (captured):
// celery's correlation_id, reply_to and extra send_task options, then kombu's delivery_mode and
// expiration, then the virtual channel's delivery_info, priority, body_encoding and delivery_tag.
func writeProperties(w *jsonWriter, m *Message) error {
	corr := m.CorrelationID
	if corr == "" {
		corr = m.ID
	}
	w.str(`{"correlation_id": `, corr)
	w.str(`, "reply_to": `, m.ReplyTo)
	if err := writeExtras(w, m.ExtraProperties, "properties", ", ", isProperty); err != nil {
		return err
	}
	mode := m.DeliveryMode
	if mode == 0 {
		mode = 2
	}
	w.b = append(w.b, `, "delivery_mode": `...)
	w.b = strconv.AppendInt(w.b, int64(mode), 10)
	if m.Expiration != "" {
		w.str(`, "expiration": `, m.Expiration)
	}
	w.str(`, "delivery_info": {"exchange": `, m.DeliveryInfo.Exchange)
	w.str(`, "routing_key": `, m.DeliveryInfo.RoutingKey)
	if m.DeliveryInfo.Redelivered {
		w.b = append(w.b, `, "redelivered": true`...)
	}
	w.b = append(w.b, `}, "priority": `...)
	w.b = strconv.AppendInt(w.b, int64(m.Priority), 10)
	w.b = append(w.b, `, "body_encoding": "base64"`...)
	w.str(`, "delivery_tag": `, m.DeliveryTag)
	w.b = append(w.b, '}')
	return nil
}
