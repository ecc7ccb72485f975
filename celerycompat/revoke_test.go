package celerycompat

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// fakeClock is a settable clock for the revoked set and token bucket.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestRevokedSetLimits(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		expires time.Duration
		steps   func(s *revokedSet, c *fakeClock)
		want    []string
		absent  []string
	}{
		{
			name: "oldest evicted past max", max: 3, expires: time.Hour,
			steps: func(s *revokedSet, c *fakeClock) {
				for _, id := range []string{"a", "b", "c", "d", "e"} {
					s.add(id)
					c.advance(time.Second)
				}
			},
			want: []string{"c", "d", "e"}, absent: []string{"a", "b"},
		},
		{
			name: "expired ids dropped", max: 10, expires: 10 * time.Second,
			steps: func(s *revokedSet, c *fakeClock) {
				s.add("old")
				c.advance(6 * time.Second)
				s.add("new")
				c.advance(5 * time.Second) // old is 11 s old, new 5 s
			},
			want: []string{"new"}, absent: []string{"old"},
		},
		{
			name: "re-adding refreshes the stamp and the order", max: 2, expires: 10 * time.Second,
			steps: func(s *revokedSet, c *fakeClock) {
				s.add("a")
				c.advance(time.Second)
				s.add("b")
				c.advance(time.Second)
				s.add("a") // a is now the newest
				c.advance(time.Second)
				s.add("c") // evicts b, the oldest
			},
			want: []string{"a", "c"}, absent: []string{"b"},
		},
		{
			name: "defaults are Celery's", max: 0, expires: 0,
			steps: func(s *revokedSet, c *fakeClock) {
				if s.max != 50000 || s.expires != 10800*time.Second {
					panic(fmt.Sprintf("defaults %d %v", s.max, s.expires))
				}
				s.add("x", "", "y")
			},
			want: []string{"x", "y"},
		},
		{
			name: "mingle merge: a 5.3+ list and a 5.2 mapping", max: 10, expires: time.Hour,
			steps: func(s *revokedSet, c *fakeClock) {
				s.merge([]any{"l1", "l2", json.Number("3")})
				c.advance(time.Second)
				s.merge(map[string]any{"m1": []any{json.Number("12.5"), "m1"}})
			},
			want: []string{"l1", "l2", "m1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeClock{t: time.Unix(1_800_000_000, 0)}
			s := newRevokedSet(tt.max, tt.expires, c.now)
			tt.steps(s, c)
			if diff := cmp.Diff(tt.want, s.list()); diff != "" {
				t.Errorf("list (-want +got):\n%s", diff)
			}
			for _, id := range tt.want {
				if !s.contains(id) {
					t.Errorf("contains(%q) = false", id)
				}
			}
			for _, id := range tt.absent {
				if s.contains(id) {
					t.Errorf("contains(%q) = true", id)
				}
			}
		})
	}
}

func TestRevokedSetBoundedUnderChurn(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s := newRevokedSet(100, time.Hour, c.now)
	for i := range 100_000 {
		s.add(fmt.Sprint(i % 150))
	}
	if n := len(s.list()); n != 100 {
		t.Fatalf("%d ids, want 100", n)
	}
	if len(s.order) > 2*100+2048 {
		t.Fatalf("order holds %d entries for 100 ids", len(s.order))
	}
}

func TestRevokedStamps(t *testing.T) {
	s := newRevokedSet(0, 0, time.Now)
	s.addStamps(map[string]any{"mtask_id": []any{"a", "b"}, "n": json.Number("7")})
	tests := []struct {
		stamps map[string]any
		want   bool
	}{
		{map[string]any{"mtask_id": "a"}, true},
		{map[string]any{"mtask_id": []any{"z", "b"}}, true},
		{map[string]any{"mtask_id": "c"}, false},
		{map[string]any{"n": json.Number("7")}, true},
		{map[string]any{"n": "7"}, false}, // '7' is not 7, as in Python
		{map[string]any{"other": "a"}, false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := s.stampRevoked(&Message{Stamps: tt.stamps}); got != tt.want {
			t.Errorf("stamps %v: revoked = %v, want %v", tt.stamps, got, tt.want)
		}
	}
}

func TestSignum(t *testing.T) {
	tests := []struct {
		in      any
		name    string
		num     int
		wantErr bool
	}{
		{nil, "SIGTERM", 15, false},
		{"", "SIGTERM", 15, false},
		{"SIGTERM", "SIGTERM", 15, false},
		{"KILL", "SIGKILL", 9, false},
		{"SIGUSR1", "SIGUSR1", 10, false},
		{"9", "SIGKILL", 9, false},
		{json.Number("2"), "SIGINT", 2, false},
		{"term", "", 0, true},
		{"SIGNOPE", "", 0, true},
		{true, "", 0, true},
	}
	for _, tt := range tests {
		name, num, err := signum(tt.in)
		if (err != nil) != tt.wantErr || name != tt.name || num != tt.num {
			t.Errorf("signum(%v) = %q, %d, %v; want %q, %d, error %v", tt.in, name, num, err, tt.name, tt.num, tt.wantErr)
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in      any
		want    float64
		wantErr string
	}{
		{"10/s", 10, ""},
		{"10", 10, ""},
		{"120/m", 2, ""},
		{"7200/h", 2, ""},
		{"", 0, ""},
		{nil, 0, ""},
		{json.Number("3"), 3, ""},
		{"abc/s", 0, `ValueError("could not convert string to float: 'abc'")`},
		{"1/d", 0, "KeyError('d')"},
	}
	for _, tt := range tests {
		got, err := parseRate(tt.in)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if got != tt.want || gotErr != tt.wantErr {
			t.Errorf("parseRate(%v) = %v, %q; want %v, %q", tt.in, got, gotErr, tt.want, tt.wantErr)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	c := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	b := &tokenBucket{rate: 2, tokens: 1, last: c.now()} // 2/s, capacity 1
	if d := b.take(c.now()); d != 0 {
		t.Fatalf("first take waits %v", d)
	}
	if d := b.take(c.now()); d != 500*time.Millisecond {
		t.Fatalf("second take waits %v, want 500ms", d)
	}
	c.advance(250 * time.Millisecond)
	if d := b.take(c.now()); d != 250*time.Millisecond {
		t.Fatalf("after 250ms waits %v, want 250ms", d)
	}
	c.advance(10 * time.Second) // capacity 1: no burst after idling
	if d := b.take(c.now()); d != 0 {
		t.Fatalf("after idling waits %v", d)
	}
	if d := b.take(c.now()); d == 0 {
		t.Fatal("a burst of two went through a capacity-1 bucket")
	}
}

func TestMatchNode(t *testing.T) {
	tests := []struct {
		node, pattern, matcher string
		want                   bool
	}{
		{"w1@host", "w1@*", "glob", true},
		{"w1@host", "w?@host", "glob", true},
		{"w1@host", "w[12]@host", "glob", true},
		{"w3@host", "w[!12]@host", "glob", true},
		{"w1@host", "w[!12]@host", "glob", false},
		{"w1@host", "*@other", "glob", false},
		{"a.b@host", "a.b@*", "glob", true},
		{"axb@host", "a.b@*", "glob", false}, // . is literal in a glob
		{"w1@host", "w1", "glob", false},     // fnmatch matches the whole name
		{"w1@host", "w1", "pcre", true},      // re.match anchors at the start only
		{"w1@host", "host", "pcre", false},
		{"w1@host", `w\d@`, "pcre", true},
		{"w1@host", "(", "pcre", false},
		{"w1@host", "*", "nope", false},
	}
	for _, tt := range tests {
		if got := matchNode(tt.node, tt.pattern, tt.matcher); got != tt.want {
			t.Errorf("matchNode(%q, %q, %q) = %v, want %v", tt.node, tt.pattern, tt.matcher, got, tt.want)
		}
	}
}

func TestUTCOffsetSign(t *testing.T) {
	tests := []struct {
		east int // seconds east of UTC
		want int
	}{
		{0, 0},
		{2 * 3600, -2},
		{-5 * 3600, 5},
		{5*3600 + 1800, -6}, // floor division, as Python's //
		{-(3*3600 + 1800), 3},
	}
	for _, tt := range tests {
		tm := time.Date(2026, 11, 26, 12, 0, 0, 0, time.FixedZone("z", tt.east))
		if got := utcOffset(tm); got != tt.want {
			t.Errorf("utcOffset(UTC%+ds) = %d, want %d", tt.east, got, tt.want)
		}
	}
}

func TestExcRepr(t *testing.T) {
	tests := []struct {
		te   *TaskError
		want string
	}{
		{&TaskError{ExcType: "MyError", ExcMessage: []any{"boom"}}, "MyError('boom')"},
		{&TaskError{ExcType: "ValueError", ExcMessage: []any{"bad", json.Number("42")}}, "ValueError('bad', 42)"},
		{&TaskError{ExcType: "KeyError"}, "KeyError()"},
	}
	for _, tt := range tests {
		if got := excRepr(tt.te); got != tt.want {
			t.Errorf("excRepr = %q, want %q", got, tt.want)
		}
	}
}

// A.11's captured ping request, as Python 5.2 published it.
const capturedPing = `{"body": "eyJtZXRob2QiOiAicGluZyIsICJhcmd1bWVudHMiOiB7fSwgImRlc3RpbmF0aW9uIjogbnVsbCwgInBhdHRlcm4iOiBudWxsLCAibWF0Y2hlciI6IG51bGwsICJ0aWNrZXQiOiAiOTcwNDFjYzAtYWFhYSIsICJyZXBseV90byI6IHsiZXhjaGFuZ2UiOiAicmVwbHkuY2VsZXJ5LnBpZGJveCIsICJyb3V0aW5nX2tleSI6ICIyMjNlZDU3MS1iYmJiIn19", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"clock": 1, "expires": 1795654966.796416}, "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "celery.pidbox", "routing_key": ""}, "priority": 0, "body_encoding": "base64", "delivery_tag": "d1"}}`

func TestDecodeControlRequest(t *testing.T) {
	env, err := decodeFanoutEnvelope([]byte(capturedPing))
	if err != nil {
		t.Fatal(err)
	}
	if got := env.headerFloat("clock"); got != 1 {
		t.Errorf("clock header = %v", got)
	}
	body, err := env.value()
	if err != nil {
		t.Fatal(err)
	}
	req, err := decodeControlRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	want := &controlRequest{Method: "ping", Arguments: map[string]any{}, Ticket: "97041cc0-aaaa",
		ReplyTo: &replyTo{Exchange: "reply.celery.pidbox", RoutingKey: "223ed571-bbbb"}}
	if diff := cmp.Diff(want, req); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}

	bad := []struct {
		name string
		body any
	}{
		{"not an object", []any{}},
		{"no method", map[string]any{"arguments": map[string]any{}}},
		{"arguments not an object", map[string]any{"method": "ping", "arguments": "x"}},
		{"destination not a list", map[string]any{"method": "ping", "destination": json.Number("1")}},
		{"reply_to without routing key", map[string]any{"method": "ping", "reply_to": map[string]any{"exchange": "x"}}},
	}
	for _, tt := range bad {
		if _, err := decodeControlRequest(tt.body); err == nil {
			t.Errorf("%s: decoded", tt.name)
		}
	}
}

func TestFanoutEnvelopeRoundTrip(t *testing.T) {
	body, err := protocol.AppendJSON(nil, protocol.PyDict{{Key: "w1@vm", Value: map[string]any{"ok": "pong"}}}, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := appendFanoutEnvelope(nil, body, protocol.PyDict{{Key: "ticket", Value: "t1"}, {Key: "clock", Value: 3}}, 1, "reply.celery.pidbox", "oid", false)
	if err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatalf("envelope is not JSON: %v\n%s", err, raw)
	}
	props := generic["properties"].(map[string]any)
	if props["delivery_mode"] != 1.0 || props["body_encoding"] != "base64" || props["delivery_tag"] == "" {
		t.Errorf("properties = %v", props)
	}
	if di := props["delivery_info"].(map[string]any); di["exchange"] != "reply.celery.pidbox" || di["routing_key"] != "oid" {
		t.Errorf("delivery_info = %v", di)
	}
	env, err := decodeFanoutEnvelope(raw)
	if err != nil {
		t.Fatal(err)
	}
	v, err := env.value()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]any{"w1@vm": map[string]any{"ok": "pong"}}, v); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if env.headers["ticket"] != "t1" || env.headerFloat("clock") != 3 {
		t.Errorf("headers = %v", env.headers)
	}
}

func TestLamportClock(t *testing.T) {
	var c lamportClock
	if c.forward() != 1 || c.adjust(10) != 11 || c.adjust(3) != 12 || c.value() != 12 {
		t.Fatalf("clock = %d", c.value())
	}
}

// FuzzDecodeControl feeds arbitrary bytes to the mailbox decoder: it must never panic, and a
// request it accepts must survive re-encoding.
func FuzzDecodeControl(f *testing.F) {
	f.Add([]byte(capturedPing))
	f.Add([]byte(`{"body": "e30=", "properties": {"body_encoding": "base64"}}`))
	f.Add([]byte(`{"body": "{\"method\": \"revoke\", \"arguments\": {\"task_id\": [\"a\"]}, \"destination\": [\"x\"]}", "headers": {"clock": 1e308}}`))
	f.Add([]byte(`{"body": "[1, 2]", "content-type": "application/x-yaml"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		env, err := decodeFanoutEnvelope(raw)
		if err != nil {
			return
		}
		_ = env.headerFloat("clock")
		body, err := env.value()
		if err != nil {
			return
		}
		req, err := decodeControlRequest(body)
		if err != nil {
			return
		}
		b := protocol.PyDict{{Key: "method", Value: req.Method}, {Key: "arguments", Value: req.Arguments}, {Key: "destination", Value: req.Destination}}
		enc, err := protocol.AppendJSON(nil, b, 0, true)
		if err != nil {
			return // a value only a kombu marker could carry
		}
		out, err := appendFanoutEnvelope(nil, enc, protocol.PyDict{{Key: "clock", Value: 1}}, 2, "celery.pidbox", "", true)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		env2, err := decodeFanoutEnvelope(out)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, out)
		}
		body2, err := env2.value()
		if err != nil {
			t.Fatalf("re-decode body: %v", err)
		}
		req2, err := decodeControlRequest(body2)
		if err != nil {
			t.Fatalf("re-decode request: %v", err)
		}
		if req2.Method != req.Method || !slices.Equal(req2.Destination, req.Destination) {
			t.Fatalf("round trip changed the request: %+v -> %+v", req, req2)
		}
	})
}
