package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestUnmarshalValueMarkers(t *testing.T) {
	utc := func(y int, mo time.Month, d, h, mi, s, us int) time.Time {
		return time.Date(y, mo, d, h, mi, s, us*1000, time.UTC)
	}
	tests := []struct {
		name string
		in   string
		want any
	}{
		// Captured from a kombu 5.5.4 producer (facts 1.4).
		{"captured datetime and decimal", `[{"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}, {"__type__": "decimal", "__value__": "1.5"}]`,
			[]any{utc(2030, 1, 2, 3, 4, 5, 0), Decimal("1.5")}},
		{"captured uuid", `{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`, UUID("12345678-1234-5678-1234-567812345678")},
		{"captured base64", `{"__type__": "base64", "__value__": "cmF3/w=="}`, []byte("raw\xff")},
		{"captured bytes", `{"__type__": "bytes", "__value__": "text"}`, []byte("text")},
		{"uuid with version (newer kombu)", `{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678", "version": 4}}`,
			UUID("12345678-1234-4678-9234-567812345678")},
		{"uuid hex with hyphens and braces", `{"__type__": "uuid", "__value__": {"hex": "{12345678-1234-5678-1234-56781234ABCD}"}}`,
			UUID("12345678-1234-5678-1234-56781234abcd")},
		{"date", `{"__type__": "date", "__value__": "2030-01-02"}`, Date{2030, 1, 2}},
		{"time", `{"__type__": "time", "__value__": "12:30:00.123456"}`, TimeOfDay{"12:30:00.123456"}},
		{"naive datetime is UTC", `{"__value__": "2030-01-02T03:04:05.000001", "__type__": "datetime"}`, utc(2030, 1, 2, 3, 4, 5, 1)},
		{"offset datetime", `{"__type__": "datetime", "__value__": "2030-01-02T03:04:05-05:30"}`,
			time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("", -5*3600-30*60))},
		{"escaped marker keys", `{"\u005f_type__": "decimal", "__value__": "-1E+3"}`, Decimal("-1E+3")},
		{"three keys is no marker", `{"__type__": "x", "__value__": 1, "more": true}`,
			map[string]any{"__type__": "x", "__value__": json.Number("1"), "more": true}},
		{"one key is no marker", `{"__type__": "x"}`, map[string]any{"__type__": "x"}},
		{"nested in a result", `{"when": {"__type__": "datetime", "__value__": "2030-01-02T03:04:05Z"}, "n": 12345678901234567890}`,
			map[string]any{"when": utc(2030, 1, 2, 3, 4, 5, 0), "n": json.Number("12345678901234567890")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Codec{}.UnmarshalValue([]byte(tt.in))
			if err != nil {
				t.Fatalf("UnmarshalValue: %v", err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
			// And back: a 5.5 peer gets markers, which decode to the same value.
			out, err := Codec{PeerVersion: Celery55}.MarshalValue(got)
			if err != nil {
				t.Fatalf("MarshalValue: %v", err)
			}
			again, err := Codec{}.UnmarshalValue(out)
			if err != nil {
				t.Fatalf("UnmarshalValue(MarshalValue): %v (%s)", err, out)
			}
			if d := cmp.Diff(got, again); d != "" {
				t.Fatalf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestUnmarshalValueErrors(t *testing.T) {
	for _, in := range []string{
		``, `{`, `[1,]`, `{"a" 1}`, `01`, `1.`, `-`, `1e`, `"\x01"`, `"\q"`, `"\u12"`, `tru`, `nul`, `[1] x`, `NaNa`, `+1`,
		`{"__type__": "pickle", "__value__": ""}`,
		`{"__type__": 1, "__value__": ""}`,
		`{"__type__": "datetime", "__value__": 5}`,
		`{"__type__": "datetime", "__value__": "2030-13-01"}`,
		`{"__type__": "date", "__value__": "2030-02-30"}`,
		`{"__type__": "time", "__value__": "25:00"}`,
		`{"__type__": "decimal", "__value__": "1.2.3"}`,
		`{"__type__": "uuid", "__value__": "12345678123456781234567812345678"}`,
		`{"__type__": "uuid", "__value__": {"hex": "123"}}`,
		`{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678", "version": 9}}`,
		`{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678", "bytes": ""}}`,
		`{"__type__": "base64", "__value__": "***"}`,
		strings.Repeat("[", maxNesting+1) + strings.Repeat("]", maxNesting+1),
	} {
		t.Run(in, func(t *testing.T) {
			v, err := Codec{}.UnmarshalValue([]byte(in))
			var de *DecodeError
			if !errors.As(err, &de) || de.Field != "value" || !errors.Is(err, ErrDecode) {
				t.Fatalf("UnmarshalValue(%q) = %v, %v; want a *DecodeError for value", in, v, err)
			}
		})
	}
}

// Without markers the decoder must agree with encoding/json (UseNumber): same values, same
// accepted inputs.
func TestUnmarshalValueMatchesEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`null`, `true`, ` false `, `0`, `-0.5e-3`, `1E+2`, `"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"`, `"\ud800"`, `"\ud800\u0041"`,
		"\"\xff\xfe bad utf-8\"", "\"é raw\"", `[]`, `{}`, `[1, [2, {"a": [3]}]]`, `{"a": 1, "a": 2}`, `{"": ""}`,
		`123456789012345678901234567890`, "\t[ 1 ,\n2 ]\r\n", `[1, 2, 3, 4, 5, 6, 7, 8]`, `[1, 2, 3, 4, 5, 6, 7, 8, 9]`,
		"[" + strings.Repeat(`"x", `, 40) + `{"k": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}]`,
	} {
		t.Run(in, func(t *testing.T) {
			got, err := Codec{}.UnmarshalValue([]byte(in))
			if err != nil {
				t.Fatalf("UnmarshalValue: %v", err)
			}
			d := json.NewDecoder(strings.NewReader(in))
			d.UseNumber()
			var want any
			if err := d.Decode(&want); err != nil {
				t.Fatalf("encoding/json: %v", err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("(-encoding/json +ours):\n%s", diff)
			}
		})
	}
}

type point struct {
	X, Y int
	When time.Time `json:"when"`
}

type fakeMarker struct {
	T string `json:"__type__"`
	V string `json:"__value__"`
}

type named string

func TestMarshalValue(t *testing.T) {
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name     string
		v        any
		want52   string // "" = same as want55
		want55   string
		err52    bool
		errAlway bool
	}{
		{name: "datetime", v: when, want52: `"2030-01-02T03:04:05Z"`, want55: `{"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}`},
		{name: "datetime with offset and micros", v: time.Date(2030, 1, 2, 3, 4, 5, 6000, time.FixedZone("", 5*3600+30*60+15)),
			want55: `{"__type__": "datetime", "__value__": "2030-01-02T03:04:05.000006+05:30:15"}`, want52: `"2030-01-02T03:04:05.000006+05:30:15"`},
		{name: "time pointer", v: &when, want52: `"2030-01-02T03:04:05Z"`, want55: `{"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}`},
		{name: "nil time pointer", v: (*time.Time)(nil), want55: `null`},
		{name: "date", v: Date{2030, 1, 2}, want52: `"2030-01-02"`, want55: `{"__type__": "date", "__value__": "2030-01-02"}`},
		{name: "time of day", v: TimeOfDay{"12:30:00"}, want52: `"12:30:00"`, want55: `{"__type__": "time", "__value__": "12:30:00"}`},
		{name: "decimal", v: Decimal("1.50"), want52: `"1.50"`, want55: `{"__type__": "decimal", "__value__": "1.50"}`},
		{name: "uuid", v: UUID("12345678-1234-5678-1234-567812345678"), want52: `"12345678-1234-5678-1234-567812345678"`,
			want55: `{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`},
		{name: "utf-8 bytes", v: []byte("text"), err52: true, want55: `{"__type__": "bytes", "__value__": "text"}`},
		{name: "binary bytes", v: []byte("raw\xff"), err52: true, want55: `{"__type__": "base64", "__value__": "cmF3/w=="}`},
		{name: "floats like Python repr", v: []any{1e16, 1.5e-5, 0.0001, 123.0, 0.1, math.Copysign(0, -1), 1e15, float32(0.1), 5e-324},
			want55: `[1e+16, 1.5e-05, 0.0001, 123.0, 0.1, -0.0, 1000000000000000.0, 0.1, 5e-324]`},
		{name: "NaN and infinities like Python", v: []float64{math.NaN(), math.Inf(1), math.Inf(-1)}, want55: `[NaN, Infinity, -Infinity]`},
		{name: "ensure_ascii", v: "h\u00e9llo \u2603 \U0001F600 \x00\x7f\u2028\n\t\"\\/", want55: `"h\u00e9llo \u2603 \ud83d\ude00 \u0000\u007f\u2028\n\t\"\\/"`},
		{name: "invalid UTF-8 becomes U+FFFD", v: "a\xffb", want55: `"a\ufffdb"`},
		{name: "big int via json.Number", v: json.Number("123456789012345678901234567890"), want55: `123456789012345678901234567890`},
		{name: "sorted map", v: map[string]any{"b": 1, "a": []any{nil, true}}, want55: `{"a": [null, true], "b": 1}`},
		{name: "typed map and slice", v: map[string][]int{"k": {1, 2}}, want55: `{"k": [1, 2]}`},
		{name: "named kinds", v: []named{"x"}, want55: `["x"]`},
		{name: "pointer to int", v: ptr(7), want55: `7`},
		{name: "struct via encoding/json", v: point{1, 2, when}, want55: `{"X":1,"Y":2,"when":"2030-01-02T03:04:05Z"}`},
		{name: "raw message", v: json.RawMessage(`{"a": [1, 2]}`), want55: `{"a": [1, 2]}`},
		{name: "signature", v: Signature{Task: "t", SubtaskType: "group"},
			want55: `{"task": "t", "args": [], "kwargs": {}, "options": {}, "subtask_type": "group", "immutable": false}`},
		{name: "nil slices and maps", v: []any{[]any(nil), map[string]any(nil), []byte(nil)}, want55: `[null, null, null]`},
		{name: "marker-shaped map", v: map[string]any{"__type__": "datetime", "__value__": "x"}, errAlway: true},
		{name: "marker-shaped string map", v: map[string]string{"__type__": "datetime", "__value__": "x"}, errAlway: true},
		{name: "marker-shaped struct", v: fakeMarker{"bytes", "x"}, errAlway: true},
		{name: "invalid json.Number", v: json.Number("0x10"), errAlway: true},
		{name: "invalid raw message", v: json.RawMessage(`{`), errAlway: true},
		{name: "raw message with unknown marker", v: json.RawMessage(`{"__type__": "what", "__value__": 1}`), errAlway: true},
		{name: "invalid date", v: Date{2030, 2, 30}, errAlway: true},
		{name: "invalid time of day", v: TimeOfDay{"noon"}, errAlway: true},
		{name: "year 0", v: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), errAlway: true},
		{name: "function", v: func() {}, errAlway: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				peer    Version
				want    string
				wantErr bool
			}{
				{Celery52, tt.want52, tt.err52 || tt.errAlway},
				{Celery55, tt.want55, tt.errAlway},
			} {
				want := c.want
				if want == "" {
					want = tt.want55
				}
				got, err := Codec{PeerVersion: c.peer}.MarshalValue(tt.v)
				if c.wantErr {
					if err == nil || !errors.Is(err, ErrEncode) {
						t.Fatalf("peer %v: MarshalValue = %s, %v; want ErrEncode", c.peer, got, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("peer %v: MarshalValue: %v", c.peer, err)
				}
				if string(got) != want {
					t.Fatalf("peer %v: MarshalValue\n got %s\nwant %s", c.peer, got, want)
				}
			}
		})
	}
}

func TestMarshalValueCycle(t *testing.T) {
	m := map[string]any{}
	m["self"] = m
	if _, err := (Codec{}).MarshalValue(m); !errors.Is(err, ErrEncode) {
		t.Fatalf("cyclic map: got %v, want ErrEncode", err)
	}
	var p any
	p = &p
	if _, err := (Codec{}).MarshalValue(p); !errors.Is(err, ErrEncode) {
		t.Fatalf("cyclic pointer: got %v, want ErrEncode", err)
	}
}

func TestPyISOFormat(t *testing.T) {
	for _, tt := range []struct {
		t    time.Time
		want string
	}{
		{time.Date(2026, 11, 26, 1, 2, 7, 499966000, time.UTC), "2026-11-26T01:02:07.499966+00:00"},
		{time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), "2030-01-02T03:04:05+00:00"},
		{time.Date(2030, 1, 2, 3, 4, 5, 999, time.UTC), "2030-01-02T03:04:05+00:00"},
		{time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("", -5*3600-30*60)), "2030-01-02T03:04:05-05:30"},
		{time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("", 5*3600+30*60+15)), "2030-01-02T03:04:05+05:30:15"},
		{time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC), "0001-01-01T00:00:00.000001+00:00"},
	} {
		if got := PyISOFormat(tt.t); got != tt.want {
			t.Errorf("PyISOFormat(%v) = %q, want %q", tt.t, got, tt.want)
		}
	}
}

func TestParsePyTime(t *testing.T) {
	at := func(h, mi, s, us, off int) time.Time {
		loc := time.UTC
		if off != 0 {
			loc = time.FixedZone("", off)
		}
		return time.Date(2030, 1, 2, h, mi, s, us*1000, loc)
	}
	// Expected values checked against Python 3.11 datetime.fromisoformat.
	for _, tt := range []struct {
		in   string
		want time.Time
	}{
		{"2030-01-02T03:04:05.499966+00:00", at(3, 4, 5, 499966, 0)},
		{"2030-01-02T03:04:05Z", at(3, 4, 5, 0, 0)},
		{"2030-01-02T03:04:05", at(3, 4, 5, 0, 0)},
		{"2030-01-02 03:04:05", at(3, 4, 5, 0, 0)},
		{"2030-01-02T03:04:05.123", at(3, 4, 5, 123000, 0)},
		{"2030-01-02T03:04:05.1", at(3, 4, 5, 100000, 0)},
		{"2030-01-02T03:04:05.1234567", at(3, 4, 5, 123456, 0)},
		{"2030-01-02T03:04", at(3, 4, 0, 0, 0)},
		{"2030-01-02T03", at(3, 0, 0, 0, 0)},
		{"2030-01-02", at(0, 0, 0, 0, 0)},
		{"2030-01-02T03:04:05-05:30", at(3, 4, 5, 0, -5*3600-30*60)},
		{"2030-01-02T03:04:05+0530", at(3, 4, 5, 0, 5*3600+30*60)},
		{"2030-01-02T03:04:05+05", at(3, 4, 5, 0, 5*3600)},
		{"2030-01-02T03:04:05+05:30:15", at(3, 4, 5, 0, 5*3600+30*60+15)},
	} {
		got, err := ParsePyTime(tt.in)
		if err != nil {
			t.Errorf("ParsePyTime(%q): %v", tt.in, err)
			continue
		}
		_, wantOff := tt.want.Zone()
		if _, off := got.Zone(); !got.Equal(tt.want) || off != wantOff {
			t.Errorf("ParsePyTime(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	for _, in := range []string{"", "2030", "2030-1-2", "2030-01-02X03:04", "2030-01-02T24:00", "2030-01-02T03:60",
		"2030-01-02T03:04:61", "2030-02-30", "0000-01-01", "2030-01-02T03:04:05.", "2030-01-02T03:04:05.1234567890",
		"2030-01-02T03:04:05+24:00", "2030-01-02T03:04:05 +00:00", "2030-01-02T03:04:05+00:00:00.5", " 2030-01-02"} {
		if got, err := ParsePyTime(in); err == nil || !errors.Is(err, ErrDecode) {
			t.Errorf("ParsePyTime(%q) = %v, %v; want an ErrDecode error", in, got, err)
		}
	}
}

// A value survives MarshalValue → UnmarshalValue for a 5.5 peer.
func TestValueRoundTrip(t *testing.T) {
	v := map[string]any{
		"when": time.Date(2030, 1, 2, 3, 4, 5, 6000, time.FixedZone("", 3600)),
		"list": []any{Date{2030, 1, 2}, TimeOfDay{"01:02"}, Decimal("NaN"), UUID("12345678-1234-5678-1234-567812345678"),
			[]byte{0, 0xff}, []byte("é"), json.Number("1.0"), "s", nil, false},
	}
	c := Codec{PeerVersion: Celery55}
	out, err := c.MarshalValue(v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.UnmarshalValue(out)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(any(v), got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
	if again, _ := c.MarshalValue(got); !bytes.Equal(out, again) {
		t.Fatalf("re-marshal differs:\n%s\n%s", out, again)
	}
}
