package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Captures from the facts sheet, appendix A (verbatim).
const (
	// A.1: protocol 2, 5.2.6 producer, add.apply_async((2, 3)).
	vecA1 = `{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "cap.add", "id": "11111111-1111-1111-1111-111111111111", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "11111111-1111-1111-1111-111111111111", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen9814@vm", "ignore_result": false}, "properties": {"correlation_id": "11111111-1111-1111-1111-111111111111", "reply_to": "cbded464-29f0-30c8-b77a-6bd8ab1024ba", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "ee9b4734-bb8a-43ee-a29c-a21e7038ae3d"}}`
	// A.2: protocol 1.
	vecA2 = `{"body": "eyJ0YXNrIjogImNhcC5hZGQiLCAiaWQiOiAiMTExMTExMTEtMTExMS0xMTExLTExMTEtMTExMTExMTExMTExIiwgImFyZ3MiOiBbMiwgM10sICJrd2FyZ3MiOiB7fSwgImdyb3VwIjogbnVsbCwgImdyb3VwX2luZGV4IjogbnVsbCwgInJldHJpZXMiOiAwLCAiZXRhIjogbnVsbCwgImV4cGlyZXMiOiBudWxsLCAidXRjIjogdHJ1ZSwgImNhbGxiYWNrcyI6IG51bGwsICJlcnJiYWNrcyI6IG51bGwsICJ0aW1lbGltaXQiOiBbbnVsbCwgbnVsbF0sICJ0YXNrc2V0IjogbnVsbCwgImNob3JkIjogbnVsbH0=", "content-encoding": "utf-8", "content-type": "application/json", "headers": {}, "properties": {"correlation_id": "11111111-1111-1111-1111-111111111111", "reply_to": "c6838c86-ca34-311c-b657-47cd3319fee5", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "87672d05-4265-4e0d-a612-1d46d7d5420f"}}`
	// A.5: the embed of the first message of chain(add.s(1,2), add.s(10), add.s(100)).
	embedA5 = `{"callbacks": null, "errbacks": null, "chain": [{"task": "cap.add", "args": [100], "kwargs": {}, "options": {"task_id": "c1a9c899-…", "reply_to": "2ae2babc-…"}, "subtask_type": null, "immutable": false}, {"task": "cap.add", "args": [10], "kwargs": {}, "options": {"task_id": "53650387-…", "reply_to": "2ae2babc-…"}, "subtask_type": null, "immutable": false}], "chord": null}`
	// A.6: link / link_error embed.
	embedA6 = `{"callbacks": [{"task": "cap.add", "args": [5], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}], "errbacks": [{"task": "cap.on_err", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}], "chain": null, "chord": null}`
	// A.7: retry-produced message (5.2.6), headers and properties.
	headersA7 = `{"lang": "py", "task": "cap.retry_me", "id": "aaaaaaaa-0000-0000-0000-000000000004", "shadow": null, "eta": "2026-11-26T01:02:30.051753+00:00", "expires": null, "group": null, "group_index": null, "retries": 1, "timelimit": [null, null], "root_id": "aaaaaaaa-0000-0000-0000-000000000004", "parent_id": "aaaaaaaa-0000-0000-0000-000000000004", "argsrepr": "(7,)", "kwargsrepr": "{}", "origin": "gen13391@vm", "ignore_result": false}`
	propsA7   = `{"correlation_id": "aaaaaaaa-0000-0000-0000-000000000004", "reply_to": "2ae2babc-1d17-3fb7-ab78-8aee0fbb4ac3", "replaced_task_nesting": 0, "origin": "gen13394@vm", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "3d04aa16-…"}`

	embedNull = `{"callbacks": null, "errbacks": null, "chain": null, "chord": null}`
	id1       = "11111111-1111-1111-1111-111111111111"
	// bodyA1 is A.1's decoded body, compressed by Python 3 (zlib.compress, bz2.compress).
	bodyA1Zlib = "eJyLjjbSUTCO1VGorgVipeTEnJykxOTsYiUrhbzSnBwdBaXUoiI0keSMxMw8ZG5+UQqUWxsLAApsGfI="
	bodyA1Bz2  = "QlpoOTFBWSZTWaRTNS4AAA+bgFAEGBAACj5tmgogAFQ1AGgANNBKmJqGh6g9QyKDgh7KRfKnlLYiH3BWh+Se77WpIy1GQqGFNWw7AESeQGBAcl8XckU4UJCkUzUu"
)

// headersA1 and propsA1 are A.1's headers and properties.
var (
	headersA1 = between(vecA1, `"headers": `, `, "properties"`)
	propsA1   = between(vecA1, `"properties": `, `}}`) + "}"
	// headersA1v55 is A.1 as a 5.5.3 producer writes it, with stamping.
	headersA1v55 = strings.TrimSuffix(headersA1, "}") + `, "replaced_task_nesting": 0, "stamped_headers": ["mystamp"], "stamps": {"mystamp": "v1"}}`
)

func between(s, from, to string) string {
	i := strings.Index(s, from) + len(from)
	return s[i : i+strings.Index(s[i:], to)]
}

// envelope builds a kombu envelope around a JSON body (base64ed like kombu does).
func envelope(headers, props, body string) string {
	return `{"body": "` + base64.StdEncoding.EncodeToString([]byte(body)) +
		`", "content-encoding": "utf-8", "content-type": "application/json", "headers": ` + headers +
		`, "properties": ` + props + `}`
}

// withDefaults is what Decode(Encode(m)) gives for m: m with the defaults Encode writes.
func withDefaults(m *Message, c Codec) *Message {
	d := *m
	if d.Protocol == 0 {
		d.Protocol = 2
	}
	if d.Protocol == 2 {
		d.UTC = true
		if d.Lang == "" {
			d.Lang = "go"
		}
		if c.PeerVersion.AtLeast(Celery53) {
			if d.ReplacedTaskNesting == nil {
				d.ReplacedTaskNesting = new(int)
			}
		} else {
			d.ReplacedTaskNesting, d.StampedHeaders, d.Stamps = nil, nil, nil
		}
	} else {
		d.Lang, d.Shadow, d.RootID, d.ParentID, d.ArgsRepr, d.KwargsRepr, d.Origin = "", "", "", "", "", "", ""
		d.IgnoreResult, d.ReplacedTaskNesting, d.StampedHeaders, d.Stamps = false, nil, nil, nil
		d.Embed.Chain = nil
	}
	if d.DeliveryMode == 0 {
		d.DeliveryMode = 2
	}
	if d.CorrelationID == "" {
		d.CorrelationID = d.ID
	}
	if d.ContentType == "" {
		d.ContentType = ContentTypeJSON
	}
	if d.ContentEncoding == "" {
		d.ContentEncoding = contentEncodingOf(&d, d.ContentType)
	}
	if d.Compression == "" {
		d.Compression = c.Compression
	}
	d.BodyEncoding = "base64"
	return &d
}

// diffMessages compares messages by meaning: empty and nil collections are equal, except for the
// embed lists, where null and [] differ on the wire (the last chain link carries "chain": []).
func diffMessages(want, got *Message) string {
	if d := cmp.Diff(want, got, cmpopts.EquateEmpty(), cmpopts.EquateNaNs()); d != "" {
		return d
	}
	for _, l := range [][2][]Signature{{want.Embed.Callbacks, got.Embed.Callbacks},
		{want.Embed.Errbacks, got.Embed.Errbacks}, {want.Embed.Chain, got.Embed.Chain}} {
		if (l[0] == nil) != (l[1] == nil) {
			return fmt.Sprintf("embed list nil-ness differs: want %#v, got %#v", l[0], l[1])
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }

func TestCodecDecodeCaptures(t *testing.T) {
	propsA1Msg := Message{CorrelationID: id1, ReplyTo: "cbded464-29f0-30c8-b77a-6bd8ab1024ba", DeliveryMode: 2,
		DeliveryTag: "ee9b4734-bb8a-43ee-a29c-a21e7038ae3d", DeliveryInfo: DeliveryInfo{RoutingKey: "celery"},
		BodyEncoding: "base64", ContentType: ContentTypeJSON, ContentEncoding: "utf-8"}
	a1 := propsA1Msg
	a1.Protocol, a1.Lang, a1.Task, a1.ID, a1.RootID, a1.UTC = 2, "py", "cap.add", id1, id1, true
	a1.ArgsRepr, a1.KwargsRepr, a1.Origin = "(2, 3)", "{}", "gen9814@vm"
	a1.Args, a1.Kwargs = []any{json.Number("2"), json.Number("3")}, map[string]any{}

	a2 := a1
	a2.Protocol, a2.Lang, a2.RootID, a2.ArgsRepr, a2.KwargsRepr, a2.Origin = 1, "", "", "", "", ""
	a2.ReplyTo, a2.DeliveryTag = "c6838c86-ca34-311c-b657-47cd3319fee5", "87672d05-4265-4e0d-a612-1d46d7d5420f"

	a1v55 := a1
	a1v55.ReplacedTaskNesting, a1v55.StampedHeaders, a1v55.Stamps = ptr(0), []string{"mystamp"}, map[string]any{"mystamp": "v1"}

	chainSig := func(arg, id string) Signature {
		return Signature{Task: "cap.add", Args: []any{json.Number(arg)}, Kwargs: map[string]any{},
			Options: map[string]any{"task_id": id, "reply_to": "2ae2babc-…"}}
	}
	a5 := a1
	a5.Args = []any{json.Number("1"), json.Number("2")}
	a5.Embed = Embed{Chain: []Signature{chainSig("100", "c1a9c899-…"), chainSig("10", "53650387-…")}}

	a6 := a5
	a6.Embed = Embed{
		Callbacks: []Signature{{Task: "cap.add", Args: []any{json.Number("5")}, Kwargs: map[string]any{}, Options: map[string]any{}}},
		Errbacks:  []Signature{{Task: "cap.on_err", Args: []any{}, Kwargs: map[string]any{}, Options: map[string]any{}}},
	}
	last := a5
	last.Args = []any{json.Number("13"), json.Number("100")}
	last.Embed = Embed{Chain: []Signature{}}

	a7 := Message{Protocol: 2, Lang: "py", Task: "cap.retry_me", ID: "aaaaaaaa-0000-0000-0000-000000000004",
		ETA: ptr(time.Date(2026, 11, 26, 1, 2, 30, 51753000, time.UTC)), Retries: 1,
		RootID: "aaaaaaaa-0000-0000-0000-000000000004", ParentID: "aaaaaaaa-0000-0000-0000-000000000004",
		ArgsRepr: "(7,)", KwargsRepr: "{}", Origin: "gen13391@vm", UTC: true,
		Args: []any{json.Number("7")}, Kwargs: map[string]any{},
		CorrelationID: "aaaaaaaa-0000-0000-0000-000000000004", ReplyTo: "2ae2babc-1d17-3fb7-ab78-8aee0fbb4ac3",
		DeliveryMode: 2, DeliveryTag: "3d04aa16-…", DeliveryInfo: DeliveryInfo{RoutingKey: "celery"},
		BodyEncoding: "base64", ContentType: ContentTypeJSON, ContentEncoding: "utf-8",
		ExtraProperties: map[string]json.RawMessage{"replaced_task_nesting": json.RawMessage("0"), "origin": json.RawMessage(`"gen13394@vm"`)},
	}
	redelivered := a1
	redelivered.Redelivered, redelivered.DeliveryInfo.Redelivered = true, true

	restored := strings.TrimSuffix(headersA1, "}") + `, "redelivered": true}`
	restoredProps := strings.Replace(propsA1, `"routing_key": "celery"}`, `"routing_key": "celery", "redelivered": true}`, 1)

	tests := []struct {
		name string
		raw  string
		want *Message
	}{
		{"A.1 protocol 2", vecA1, &a1},
		{"A.2 protocol 1", vecA2, &a2},
		{"A.1 from 5.5.3 with stamps", envelope(headersA1v55, propsA1, `[[2, 3], {}, `+embedNull+`]`), &a1v55},
		{"A.5 chain", envelope(headersA1, propsA1, `[[1, 2], {}, `+embedA5+`]`), &a5},
		{"A.5 last chain link", envelope(headersA1, propsA1, `[[13, 100], {}, {"callbacks": null, "errbacks": null, "chain": [], "chord": null}]`), &last},
		{"A.6 link and link_error", envelope(headersA1, propsA1, `[[1, 2], {}, `+embedA6+`]`), &a6},
		{"A.7 retried", envelope(headersA7, propsA7, `[[7], {}, `+embedNull+`]`), &a7},
		{"A.9 restored", envelope(restored, restoredProps, `[[2, 3], {}, `+embedNull+`]`), &redelivered},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Codec{}.Decode([]byte(tt.raw))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("Decode mismatch (-want +got):\n%s", d)
			}
			// Re-encoding for the same peer gives a message that decodes the same.
			c := Codec{PeerVersion: Celery55}
			out, err := c.Encode(got)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			again, err := c.Decode(out)
			if err != nil {
				t.Fatalf("Decode(Encode): %v", err)
			}
			if d := diffMessages(withDefaults(got, c), again); d != "" {
				t.Fatalf("round trip mismatch (-want +got):\n%s", d)
			}
		})
	}
}

// What Go writes for a message decoded from Python is what Python wrote, byte for byte, wherever
// Python's key order is known.
func TestCodecEncodeMatchesPython(t *testing.T) {
	// The facts sheet elides ids with "…"; Python's ensure_ascii would have written it escaped.
	ascii := strings.NewReplacer("…", `\u2026`)
	tests := []struct {
		name string
		peer Version
		raw  string
	}{
		{"A.1 for 5.2", Version{}, vecA1},
		{"A.2 protocol 1", Version{}, vecA2},
		{"A.1 from 5.5.3 for 5.5", Celery55, envelope(headersA1v55, propsA1, `[[2, 3], {}, `+embedNull+`]`)},
		// Go sorts option keys; Python kept insertion order (task_id first).
		{"A.5 chain", Version{}, envelope(headersA1, propsA1, `[[1, 2], {}, `+ascii.Replace(strings.NewReplacer(
			`"task_id": "c1a9c899-…", "reply_to": "2ae2babc-…"`, `"reply_to": "2ae2babc-…", "task_id": "c1a9c899-…"`,
			`"task_id": "53650387-…", "reply_to": "2ae2babc-…"`, `"reply_to": "2ae2babc-…", "task_id": "53650387-…"`).Replace(embedA5))+`]`)},
		{"A.6 links", Version{}, envelope(headersA1, propsA1, `[[1, 2], {}, `+embedA6+`]`)},
		// Extra properties are written in sorted order; Python wrote them in insertion order.
		{"A.7 retried", Version{}, envelope(headersA7, strings.Replace(propsA7, `"replaced_task_nesting": 0, "origin": "gen13394@vm"`,
			`"origin": "gen13394@vm", "replaced_task_nesting": 0`, 1), `[[7], {}, `+embedNull+`]`)},
		{"restored", Version{}, envelope(strings.TrimSuffix(headersA1, "}")+`, "redelivered": true}`,
			strings.Replace(propsA1, `"celery"}`, `"celery", "redelivered": true}`, 1), `[[2, 3], {}, `+embedNull+`]`)},
		{"custom header", Version{}, envelope(strings.TrimSuffix(headersA1, "}")+`, "x-custom": "hello"}`, propsA1, `[[2, 3], {}, `+embedNull+`]`)},
		{"countdown and expires", Version{}, envelope(strings.Replace(strings.Replace(headersA1, `"eta": null, "expires": null`,
			`"eta": "2026-11-26T01:02:07.499966+00:00", "expires": "2026-11-26T01:03:07.499966+00:00"`, 1),
			`"timelimit": [null, null]`, `"timelimit": [30, 20]`, 1),
			strings.Replace(propsA1, `"delivery_mode": 2, `, `"delivery_mode": 2, "expiration": "120000", `, 1), `[[2, 3], {}, `+embedNull+`]`)},
		{"non-ASCII", Version{}, envelope(headersA1, propsA1, `[["h\u00e9llo \u2603 \ud83d\ude00", "\n\t\"\\"], {"k\u00e9": 1.5}, `+embedNull+`]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Codec{PeerVersion: tt.peer}
			tt.raw = ascii.Replace(tt.raw)
			m, err := c.Decode([]byte(tt.raw))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			out, err := c.Encode(m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if string(out) != tt.raw {
				t.Fatalf("Encode differs from Python's bytes\n got: %s\nwant: %s", out, tt.raw)
			}
		})
	}
}

// Header order and nulls of a message built in Go, on the exact bytes.
func TestCodecEncodeHeaders(t *testing.T) {
	base := func() *Message {
		return &Message{Task: "tasks.add", ID: "id-1", DeliveryTag: "tag-1", DeliveryInfo: DeliveryInfo{RoutingKey: "celery"}}
	}
	eta := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name        string
		codec       Codec
		msg         func() *Message
		headers     string
		props       string
		contentType string
	}{
		{
			name:    "zero message, 5.2",
			msg:     base,
			headers: `{"lang": "go", "task": "tasks.add", "id": "id-1", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": null, "parent_id": null, "argsrepr": "", "kwargsrepr": "", "origin": null, "ignore_result": false}`,
			props:   `{"correlation_id": "id-1", "reply_to": "", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "tag-1"}`,
		},
		{
			name:  "everything, 5.5, zlib",
			codec: Codec{PeerVersion: Celery55, Compression: CompressionZlib},
			msg: func() *Message {
				m := base()
				m.Lang, m.Shadow, m.ETA, m.Expires = "go", "shadowed", &eta, ptr(eta.In(time.FixedZone("", 3600)).Add(time.Microsecond))
				m.Group, m.GroupIndex, m.Retries = "g-1", ptr(0), 3
				m.TimeLimit = TimeLimit{Hard: ptr(30.0), Soft: ptr(20.5)}
				m.RootID, m.ParentID, m.ArgsRepr, m.KwargsRepr, m.Origin = "root", "parent", "(1,)", "{}", "gen1@host"
				m.IgnoreResult, m.Redelivered = true, true
				m.ExtraHeaders = map[string]json.RawMessage{"z-last": json.RawMessage(`[1, 2]`), "a-first": json.RawMessage(`"x"`)}
				m.ReplyTo, m.Priority, m.Expiration = "reply", 9, "1000"
				m.DeliveryInfo.Exchange, m.DeliveryInfo.Redelivered = "ex", true
				m.ExtraProperties = map[string]json.RawMessage{"origin": json.RawMessage(`"gen2@host"`)}
				return m
			},
			headers: `{"lang": "go", "task": "tasks.add", "id": "id-1", "shadow": "shadowed", "eta": "2030-01-02T03:04:05+00:00", "expires": "2030-01-02T04:04:05.000001+01:00", "group": "g-1", "group_index": 0, "retries": 3, "timelimit": [30, 20.5], "root_id": "root", "parent_id": "parent", "argsrepr": "(1,)", "kwargsrepr": "{}", "origin": "gen1@host", "ignore_result": true, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}, "compression": "application/x-gzip", "redelivered": true, "a-first": "x", "z-last": [1, 2]}`,
			props:   `{"correlation_id": "id-1", "reply_to": "reply", "origin": "gen2@host", "delivery_mode": 2, "expiration": "1000", "delivery_info": {"exchange": "ex", "routing_key": "celery", "redelivered": true}, "priority": 9, "body_encoding": "base64", "delivery_tag": "tag-1"}`,
		},
		{
			name: "protocol 1 with custom header",
			msg: func() *Message {
				m := base()
				m.Protocol = 1
				m.ExtraHeaders = map[string]json.RawMessage{"x-custom": json.RawMessage(`"hello"`)}
				return m
			},
			headers: `{"x-custom": "hello"}`,
			props:   `{"correlation_id": "id-1", "reply_to": "", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "tag-1"}`,
		},
		{
			name:  "msgpack",
			codec: Codec{PeerVersion: Celery53},
			msg: func() *Message {
				m := base()
				m.ContentType, m.StampedHeaders, m.Stamps = ContentTypeMsgpack, []string{"s"}, map[string]any{"s": json.Number("1")}
				return m
			},
			headers:     `{"lang": "go", "task": "tasks.add", "id": "id-1", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": null, "parent_id": null, "argsrepr": "", "kwargsrepr": "", "origin": null, "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": ["s"], "stamps": {"s": 1}}`,
			props:       `{"correlation_id": "id-1", "reply_to": "", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "tag-1"}`,
			contentType: `"content-encoding": "binary", "content-type": "application/x-msgpack"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.msg()
			out, err := tt.codec.Encode(m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			s := string(out)
			if !strings.HasPrefix(s, `{"body": "`) {
				t.Fatalf("envelope does not start with body: %s", s)
			}
			ct := tt.contentType
			if ct == "" {
				ct = `"content-encoding": "utf-8", "content-type": "application/json"`
			}
			wantTail := `", ` + ct + `, "headers": ` + tt.headers + `, "properties": ` + tt.props + `}`
			if i := strings.Index(s, `", "content-encoding"`); i < 0 || s[i:] != wantTail {
				t.Fatalf("envelope tail\n got: %s\nwant: %s", s[max(i, 0):], wantTail)
			}
			got, err := tt.codec.Decode(out)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if d := diffMessages(withDefaults(m, tt.codec), got); d != "" {
				t.Fatalf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestCodecRoundTrip(t *testing.T) {
	when := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.FixedZone("", -5*3600-30*60))
	sig := Signature{Task: "tasks.next", Args: []any{json.Number("1")}, Kwargs: map[string]any{"k": "v"},
		Options: map[string]any{"task_id": "x", "link": []any{map[string]any{"task": "t"}}}, SubtaskType: "chain", Immutable: true}
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	tests := []struct {
		name  string
		codec Codec
		msg   Message
	}{
		{"typed values for 5.5", Codec{PeerVersion: Celery55}, Message{
			Args: []any{when, Date{2030, 1, 2}, TimeOfDay{"12:30:00.5"}, Decimal("1.50"), UUID("12345678-1234-5678-1234-567812345678"),
				[]byte("text"), []byte{0xff, 0}, json.Number("123456789012345678901234567890"), json.Number("1e400"), nil, true},
			Kwargs: map[string]any{"nested": map[string]any{"list": []any{"a", json.Number("-0.5")}}},
		}},
		{"embed", Codec{PeerVersion: Celery55}, Message{
			Embed: Embed{Callbacks: []Signature{sig}, Errbacks: []Signature{}, Chain: []Signature{sig, {Task: "tasks.first"}}, Chord: &sig},
		}},
		{"last chain link", Codec{}, Message{Embed: Embed{Chain: []Signature{}}}},
		{"stamps", Codec{PeerVersion: Celery55}, Message{StampedHeaders: []string{"a"}, Stamps: map[string]any{"a": when}, ReplacedTaskNesting: ptr(2)}},
		{"protocol 1", Codec{}, Message{Protocol: 1, UTC: true, ETA: &when, Expires: &when, Group: "g", GroupIndex: ptr(1), Retries: 2,
			TimeLimit: TimeLimit{Hard: ptr(1.5)}, Embed: Embed{Callbacks: []Signature{sig}, Chord: &sig}, Args: []any{"x"}}},
		{"protocol 1 utc false", Codec{}, Message{Protocol: 1, UTC: false}},
		{"non-ASCII", Codec{}, Message{Args: []any{"héllo ☃ 😀 \x00\x7f\u2028"}, Kwargs: map[string]any{"ключ": "значение"}, ArgsRepr: "('héllo',)"}},
		{"1 MiB payload", Codec{}, Message{Args: []any{big}}},
		{"1 MiB payload, zlib", Codec{Compression: CompressionZlib}, Message{Args: []any{big}}},
		{"msgpack", Codec{}, Message{ContentType: ContentTypeMsgpack, Args: []any{json.Number("1"), json.Number("-2"),
			json.Number("18446744073709551615"), json.Number("1.5"), json.Number("2.0"), "s", []byte{1, 2}, []any{}, map[string]any{}},
			Kwargs: map[string]any{"a": nil}, Embed: Embed{Chain: []Signature{sig}}}},
		{"msgpack zlib", Codec{Compression: "zlib"}, Message{ContentType: ContentTypeMsgpack, Args: []any{big}}},
		{"redelivered", Codec{}, Message{Redelivered: true, DeliveryInfo: DeliveryInfo{Redelivered: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.msg
			m.Task, m.ID, m.DeliveryTag = "tasks.add", "id-1", "tag-1"
			m.DeliveryInfo.RoutingKey = "celery"
			out, err := tt.codec.Encode(&m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := tt.codec.Decode(out)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			want := withDefaults(&m, tt.codec)
			if m.ContentType == ContentTypeMsgpack {
				// msgpack has no float/int distinction beyond the wire type: 2.0 stays a float.
				want.Args = append([]any(nil), m.Args...)
			}
			if d := diffMessages(want, got); d != "" {
				t.Fatalf("round trip (-want +got):\n%s", d)
			}
			again, err := tt.codec.Encode(got)
			if err != nil {
				t.Fatalf("re-Encode: %v", err)
			}
			if !bytes.Equal(out, again) {
				t.Fatalf("re-encoding differs:\n%.300s\n%.300s", out, again)
			}
		})
	}
}

func TestCodecDecodeCompressed(t *testing.T) {
	a1 := func(comp, b64 string) string {
		h := strings.TrimSuffix(headersA1, "}") + `, "compression": "` + comp + `"}`
		return `{"body": "` + b64 + `", "content-encoding": "utf-8", "content-type": "application/json", "headers": ` + h + `, "properties": ` + propsA1 + `}`
	}
	for _, tt := range []struct{ comp, body string }{
		{CompressionZlib, bodyA1Zlib}, {"zlib", bodyA1Zlib}, {"gzip", bodyA1Zlib}, {CompressionBzip2, bodyA1Bz2}, {"bzip2", bodyA1Bz2},
	} {
		t.Run(tt.comp, func(t *testing.T) {
			m, err := Codec{}.Decode([]byte(a1(tt.comp, tt.body)))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if m.Compression != tt.comp || m.Task != "cap.add" || len(m.Args) != 2 {
				t.Fatalf("got compression %q task %q args %v", m.Compression, m.Task, m.Args)
			}
			out, err := Codec{}.Encode(m)
			if compressionKind(tt.comp) == "bzip2" {
				if !errors.Is(err, ErrUnsupportedCompression) || !errors.Is(err, ErrEncode) {
					t.Fatalf("Encode bzip2: got %v, want ErrUnsupportedCompression", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !strings.Contains(string(out), `"compression": "`+tt.comp+`"`) {
				t.Fatalf("compression header lost: %s", out)
			}
		})
	}
}

// Decoding tolerates what Python tolerates.
func TestCodecDecodeLenient(t *testing.T) {
	tests := []struct {
		name  string
		raw   string
		check func(*Message) bool
	}{
		{"raw JSON body without body_encoding", `{"body": "[[2, 3], {}, null]", "content-type": "application/json", "headers": ` + headersA1 +
			`, "properties": {"delivery_info": {"routing_key": "celery"}, "delivery_tag": "t"}}`,
			func(m *Message) bool {
				return m.BodyEncoding == "" && len(m.Args) == 2 && m.ContentEncoding == "utf-8" && m.DeliveryMode == 0
			}},
		{"utf-8 body_encoding (kombu 5.4)", `{"body": "[[\"\u00e9\"], {}, null]", "content-type": "application/json", "headers": ` + headersA1 +
			`, "properties": {"body_encoding": "utf-8", "delivery_info": {"exchange": null, "routing_key": "celery"}, "delivery_tag": "t"}}`,
			func(m *Message) bool { return m.BodyEncoding == "utf-8" && m.Args[0] == "é" }},
		{"no content type", `{"body": "[[], {}, null]", "headers": {"task": "t", "id": "i"}, "properties": {"delivery_info": {"routing_key": "q"}, "delivery_tag": "t"}}`,
			func(m *Message) bool { return m.ContentType == ContentTypeJSON && m.Lang == "" }},
		{"eta with Z, naive expires, unknown headers", envelope(strings.Replace(headersA1, `"eta": null, "expires": null`,
			`"eta": "2030-01-02T03:04:05Z", "expires": "2030-01-02 03:04:05", "future": {"a": [1]}`, 1), propsA1, `[[], {}, null]`),
			func(m *Message) bool {
				return m.ETA.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) && m.Expires.Equal(*m.ETA) &&
					string(m.ExtraHeaders["future"]) == `{"a": [1]}`
			}},
		{"eta as a kombu marker", envelope(strings.Replace(headersA1, `"eta": null`,
			`"eta": {"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}`, 1), propsA1, `[[], {}, null]`),
			func(m *Message) bool { return m.ETA.Equal(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) }},
		{"protocol 1 taskset", envelope(`{"redelivered": true, "lang": "py"}`, propsA1, `{"task": "t", "id": "i", "taskset": "g", "utc": false, "timelimit": [1, null]}`),
			func(m *Message) bool {
				return m.Protocol == 1 && m.Group == "g" && !m.UTC && m.Redelivered && *m.TimeLimit.Hard == 1 &&
					string(m.ExtraHeaders["lang"]) == `"py"` && m.Args == nil
			}},
		{"numeric expiration", envelope(headersA1, strings.TrimSuffix(propsA1, "}")+`, "expiration": 120000}`, `[[], {}, null]`),
			func(m *Message) bool { return m.Expiration == "120000" }},
		{"whitespace and escapes", " \n" + strings.Replace(vecA1, `"task": "cap.add"`, `"task": "cap\u002eadd"`, 1) + "\n",
			func(m *Message) bool { return m.Task == "cap.add" }},
		{"NaN and Infinity (Python json)", envelope(headersA1, propsA1, `[[NaN, Infinity, -Infinity], {}, null]`),
			func(m *Message) bool { return m.Args[0] == json.Number("NaN") && m.Args[2] == json.Number("-Infinity") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Codec{}.Decode([]byte(tt.raw))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !tt.check(m) {
				t.Fatalf("unexpected message: %+v", m)
			}
			out, err := Codec{PeerVersion: Celery55}.Encode(m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if _, err := (Codec{}).Decode(out); err != nil {
				t.Fatalf("Decode(Encode): %v", err)
			}
		})
	}
}

// A large envelope is read in place; the message must not alias the caller's buffer.
func TestCodecDecodeDoesNotAliasInput(t *testing.T) {
	raw := []byte(envelope(headersA1, propsA1, `[["`+strings.Repeat("x", copyLimit)+`"], {"k": "v"}, null]`))
	m, err := Codec{}.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		raw[i] = '#'
	}
	if m.Task != "cap.add" || m.ID != id1 || m.DeliveryInfo.RoutingKey != "celery" || m.Kwargs["k"] != "v" {
		t.Fatalf("message changed with the input buffer: %+v", m)
	}
}

func TestCodecEncodeBody(t *testing.T) {
	m := &Message{Args: []any{json.Number("2"), json.Number("3")}}
	body, ct, err := Codec{}.EncodeBody(m)
	if err != nil {
		t.Fatal(err)
	}
	if want := `[[2, 3], {}, ` + embedNull + `]`; string(body) != want || ct != ContentTypeJSON {
		t.Fatalf("EncodeBody = %s %q, want %s", body, ct, want)
	}
}
