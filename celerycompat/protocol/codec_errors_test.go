package protocol

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// zlibBase64 compresses s the way kombu's application/x-gzip compressor does.
func zlibBase64(s string) string {
	var b bytes.Buffer
	w := zlib.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return base64.StdEncoding.EncodeToString(b.Bytes())
}

func TestCodecDecodeErrors(t *testing.T) {
	body := func(b string) string { return envelope(headersA1, propsA1, b) }
	hdr := func(old, new string) string {
		return envelope(strings.Replace(headersA1, old, new, 1), propsA1, `[[2, 3], {}, null]`)
	}
	prop := func(old, new string) string {
		return envelope(headersA1, strings.Replace(propsA1, old, new, 1), `[[2, 3], {}, null]`)
	}
	withCT := func(ct string) string { return strings.Replace(vecA1, ContentTypeJSON, ct, 1) }
	compressed := func(comp, b64 string) string {
		h := strings.TrimSuffix(headersA1, "}") + `, "compression": "` + comp + `"}`
		return `{"body": "` + b64 + `", "content-type": "application/json", "headers": ` + h + `, "properties": ` + propsA1 + `}`
	}
	bomb := zlibBase64("[[\"" + strings.Repeat("0", 2<<20) + "\"], {}, null]")
	tests := []struct {
		name  string
		codec Codec
		raw   string
		field string
		is    []error
		ct    string // ContentTypeError.ContentType expected
	}{
		{"not JSON", Codec{}, "nope", "envelope", nil, ""},
		{"empty", Codec{}, "", "envelope", nil, ""},
		{"array envelope", Codec{}, "[]", "envelope", nil, ""},
		{"trailing data", Codec{}, vecA1 + "x", "envelope", nil, ""},
		{"truncated", Codec{}, vecA1[:len(vecA1)-1], "envelope", nil, ""},
		{"body not a string", Codec{}, strings.Replace(vecA1, `"body": "`, `"body": 5, "x": "`, 1), "body", nil, ""},
		{"body missing", Codec{}, `{"headers": ` + headersA1 + `, "properties": ` + propsA1 + `}`, "body", nil, ""},
		{"pickle", Codec{}, withCT(ContentTypePickle), "content-type", []error{ErrUnsupportedContentType}, ContentTypePickle},
		{"yaml", Codec{}, withCT(ContentTypeYAML), "content-type", []error{ErrUnsupportedContentType}, ContentTypeYAML},
		{"unknown content type", Codec{}, withCT("text/plain"), "content-type", []error{ErrUnsupportedContentType}, "text/plain"},
		{"unknown body encoding", Codec{}, strings.Replace(vecA1, `"base64"`, `"rot13"`, 1), "properties.body_encoding", nil, ""},
		{"bad base64", Codec{}, strings.Replace(vecA1, `"W1sy`, `"!!!!`, 1), "body", nil, ""},
		{"two-element body", Codec{}, body(`[[2, 3], {}]`), "body", nil, ""},
		{"object body with task header", Codec{}, body(`{"args": []}`), "body", nil, ""},
		{"body not JSON", Codec{}, body(`[[2, 3], {}, null`), "body", nil, ""},
		{"args not an array", Codec{}, body(`[{}, {}, null]`), "body[0]", nil, ""},
		{"kwargs not an object", Codec{}, body(`[[], [], null]`), "body[1]", nil, ""},
		{"embed not an object", Codec{}, body(`[[], {}, 1]`), "body[2]", nil, ""},
		{"callbacks not a list", Codec{}, body(`[[], {}, {"callbacks": {}}]`), "body[2].callbacks", nil, ""},
		{"chain task not a string", Codec{}, body(`[[], {}, {"chain": [{"task": "a"}, {"task": 1}]}]`), "body[2].chain[1].task", nil, ""},
		{"chain args not a list", Codec{}, body(`[[], {}, {"chain": [{"args": 1}]}]`), "body[2].chain[0].args", nil, ""},
		{"chord not an object", Codec{}, body(`[[], {}, {"chord": []}]`), "body[2].chord", nil, ""},
		{"unknown marker in args", Codec{}, body(`[[{"__type__": "pickle", "__value__": ""}], {}, null]`), "body", nil, ""},
		{"bad datetime marker", Codec{}, body(`[[{"__type__": "datetime", "__value__": "yesterday"}], {}, null]`), "body", nil, ""},
		{"too deep", Codec{}, body(`[` + strings.Repeat("[", maxNesting) + strings.Repeat("]", maxNesting) + `, {}, null]`), "body", nil, ""},
		{"bad eta", Codec{}, hdr(`"eta": null`, `"eta": "tomorrow"`), "headers.eta", nil, ""},
		{"eta not a string", Codec{}, hdr(`"eta": null`, `"eta": 5`), "headers.eta", nil, ""},
		{"retries not an int", Codec{}, hdr(`"retries": 0`, `"retries": "x"`), "headers.retries", nil, ""},
		{"retries a float", Codec{}, hdr(`"retries": 0`, `"retries": 1.5`), "headers.retries", nil, ""},
		{"timelimit one element", Codec{}, hdr(`"timelimit": [null, null]`, `"timelimit": [1]`), "headers.timelimit", nil, ""},
		{"timelimit soft not a number", Codec{}, hdr(`"timelimit": [null, null]`, `"timelimit": [1, "x"]`), "headers.timelimit[1]", nil, ""},
		{"stamps not an object", Codec{}, hdr(`"retries": 0`, `"retries": 0, "stamps": []`), "headers.stamps", nil, ""},
		{"stamped_headers not strings", Codec{}, hdr(`"retries": 0`, `"retries": 0, "stamped_headers": [1]`), "headers.stamped_headers", nil, ""},
		{"redelivered not a bool", Codec{}, hdr(`"retries": 0`, `"retries": 0, "redelivered": "yes"`), "headers.redelivered", nil, ""},
		{"bad marker in custom header", Codec{}, hdr(`"retries": 0`, `"retries": 0, "x": {"__type__": "nope", "__value__": 1}`), "headers.x", nil, ""},
		{"empty task", Codec{}, hdr(`"task": "cap.add"`, `"task": ""`), "headers.task", nil, ""},
		{"null task", Codec{}, hdr(`"task": "cap.add"`, `"task": null`), "headers.task", nil, ""},
		{"missing id", Codec{}, hdr(`"id": "11111111-1111-1111-1111-111111111111", `, ``), "headers.id", nil, ""},
		{"missing delivery tag", Codec{}, prop(`, "delivery_tag": "ee9b4734-bb8a-43ee-a29c-a21e7038ae3d"`, ``), "properties.delivery_tag", nil, ""},
		{"missing routing key", Codec{}, prop(`, "routing_key": "celery"`, ``), "properties.delivery_info.routing_key", nil, ""},
		{"priority not an int", Codec{}, prop(`"priority": 0`, `"priority": "high"`), "properties.priority", nil, ""},
		{"exchange not a string", Codec{}, prop(`"exchange": ""`, `"exchange": 1`), "properties.delivery_info.exchange", nil, ""},
		{"headers not an object", Codec{}, strings.Replace(vecA1, `"headers": {`, `"headers": [], "x": {`, 1), "headers", nil, ""},
		{"lzma", Codec{}, compressed("application/x-lzma", bodyA1Zlib), "headers.compression", []error{ErrUnsupportedCompression}, ""},
		{"corrupt zlib", Codec{}, compressed(CompressionZlib, bodyA1Bz2), "body", nil, ""},
		{"zlib bomb", Codec{MaxBodySize: 1 << 20}, compressed(CompressionZlib, bomb), "body", []error{ErrBodyTooLarge}, ""},
		{"body over limit", Codec{MaxBodySize: 10}, vecA1, "body", []error{ErrBodyTooLarge}, ""},
		{"protocol 1 without task", Codec{}, envelope(`{}`, propsA1, `{"id": "x", "args": []}`), "body.task", nil, ""},
		{"protocol 1 without id", Codec{}, envelope(`{}`, propsA1, `{"task": "x"}`), "body.id", nil, ""},
		{"protocol 1 array body", Codec{}, envelope(`{}`, propsA1, `[[], {}, null]`), "body", nil, ""},
		{"protocol 1 bad callback", Codec{}, envelope(`{}`, propsA1, `{"task": "t", "id": "i", "callbacks": [{"task": 1}]}`), "body.callbacks[0].task", nil, ""},
		{"protocol 1 bad eta", Codec{}, envelope(`{}`, propsA1, `{"task": "t", "id": "i", "eta": "x"}`), "body.eta", nil, ""},
		{"msgpack extension", Codec{}, strings.Replace(strings.Replace(vecA1, ContentTypeJSON, ContentTypeMsgpack, 1),
			`"W1sy`, `"`+base64.StdEncoding.EncodeToString([]byte{0x93, 0xd4, 1, 2, 0x80, 0xc0})+`", "x": "`, 1), "body", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.codec.Decode([]byte(tt.raw))
			if err == nil {
				t.Fatalf("Decode succeeded: %+v", m)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not a *DecodeError", err, err)
			}
			if de.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", de.Field, tt.field, err)
			}
			if !errors.Is(err, ErrDecode) {
				t.Errorf("error %v does not match ErrDecode", err)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("error %v does not match %v", err, target)
				}
			}
			var cte *ContentTypeError
			if got := errors.As(err, &cte); got != (tt.ct != "") || got && cte.ContentType != tt.ct {
				t.Errorf("ContentTypeError: got %v (%v), want content type %q", got, cte, tt.ct)
			}
		})
	}
}

func TestCodecEncodeErrors(t *testing.T) {
	valid := func() *Message {
		return &Message{Task: "t", ID: "i", DeliveryTag: "d", DeliveryInfo: DeliveryInfo{RoutingKey: "celery"}}
	}
	tests := []struct {
		name   string
		codec  Codec
		change func(m *Message)
		is     []error
		text   string
	}{
		{"empty task", Codec{}, func(m *Message) { m.Task = "" }, nil, "headers.task"},
		{"empty id", Codec{}, func(m *Message) { m.ID = "" }, nil, "headers.id"},
		{"empty delivery tag", Codec{}, func(m *Message) { m.DeliveryTag = "" }, nil, "properties.delivery_tag"},
		{"empty routing key", Codec{}, func(m *Message) { m.DeliveryInfo.RoutingKey = "" }, nil, "routing_key"},
		{"bytes for 5.2", Codec{}, func(m *Message) { m.Args = []any{[]byte("x")} }, nil, "kombu 5.3"},
		{"marker-shaped map", Codec{PeerVersion: Celery55}, func(m *Message) {
			m.Kwargs = map[string]any{"v": map[string]any{"__type__": "datetime", "__value__": "x"}}
		}, nil, "__type__"},
		{"reserved extra header", Codec{}, func(m *Message) { m.ExtraHeaders = map[string]json.RawMessage{"eta": json.RawMessage("null")} }, nil, "headers.eta"},
		{"task in protocol 1 extra header", Codec{}, func(m *Message) {
			m.Protocol, m.ExtraHeaders = 1, map[string]json.RawMessage{"task": json.RawMessage(`"x"`)}
		}, nil, "headers.task"},
		{"reserved extra property", Codec{}, func(m *Message) {
			m.ExtraProperties = map[string]json.RawMessage{"priority": json.RawMessage("1")}
		}, nil, "properties.priority"},
		{"invalid raw header", Codec{}, func(m *Message) { m.ExtraHeaders = map[string]json.RawMessage{"x": json.RawMessage("{")} }, nil, "headers.x"},
		{"invalid marker in raw header", Codec{}, func(m *Message) {
			m.ExtraHeaders = map[string]json.RawMessage{"x": json.RawMessage(`{"__type__": "what", "__value__": 1}`)}
		}, nil, "headers.x"},
		{"chain in protocol 1", Codec{}, func(m *Message) { m.Protocol, m.Embed.Chain = 1, []Signature{{Task: "x"}} }, nil, "chain"},
		{"time out of range", Codec{}, func(m *Message) { m.ETA = ptr(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)) }, nil, "range"},
		{"invalid json.Number", Codec{}, func(m *Message) { m.Args = []any{json.Number("1x")} }, nil, "json.Number"},
		{"invalid decimal", Codec{PeerVersion: Celery55}, func(m *Message) { m.Args = []any{Decimal("one")} }, nil, "decimal"},
		{"invalid uuid", Codec{PeerVersion: Celery55}, func(m *Message) { m.Args = []any{UUID("nope")} }, nil, "UUID"},
		{"pickle", Codec{}, func(m *Message) { m.ContentType = ContentTypePickle }, []error{ErrUnsupportedContentType}, "pickle"},
		{"bzip2", Codec{Compression: CompressionBzip2}, func(*Message) {}, []error{ErrUnsupportedCompression}, "bz2"},
		{"too large", Codec{MaxBodySize: 100}, func(m *Message) { m.Args = []any{strings.Repeat("x", 100)} }, []error{ErrBodyTooLarge}, "limit 100"},
		{"unencodable value", Codec{}, func(m *Message) { m.Args = []any{make(chan int)} }, nil, "chan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid()
			tt.change(m)
			out, err := tt.codec.Encode(m)
			if err == nil {
				t.Fatalf("Encode succeeded: %s", out)
			}
			if !errors.Is(err, ErrEncode) {
				t.Errorf("error %v does not match ErrEncode", err)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("error %v does not match %v", err, target)
				}
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not mention %q", err, tt.text)
			}
		})
	}
}
