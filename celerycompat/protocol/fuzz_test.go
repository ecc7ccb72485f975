package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wireVectors returns every envelope captured from real Celery by testdata/python/capture.py
// (testdata/wire/<version>/<case>.msg.json, the exact list element). There may be none yet.
func wireVectors(t testing.TB) map[string][]byte {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "wire", "*", "*.msg.json"))
	out := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = b
	}
	return out
}

// envelopeSeeds are the appendix A captures and variants, as whole envelopes.
func envelopeSeeds() []string {
	withHeaders := func(extra string) string {
		return envelope(strings.TrimSuffix(headersA1, "}")+extra+"}", propsA1, `[[2, 3], {}, `+embedNull+`]`)
	}
	compressed := func(comp, b64 string) string {
		return `{"body": "` + b64 + `", "content-encoding": "utf-8", "content-type": "application/json", "headers": ` +
			strings.TrimSuffix(headersA1, "}") + `, "compression": "` + comp + `"}, "properties": ` + propsA1 + `}`
	}
	return []string{
		vecA1,
		vecA2,
		envelope(headersA1v55, propsA1, `[[2, 3], {}, `+embedNull+`]`),
		envelope(headersA1, propsA1, `[[1, 2], {}, `+embedA5+`]`),
		envelope(headersA1, propsA1, `[[13, 100], {}, {"callbacks": null, "errbacks": null, "chain": [], "chord": null}]`),
		envelope(headersA1, propsA1, `[[1, 2], {}, `+embedA6+`]`),
		envelope(headersA7, propsA7, `[[7], {}, `+embedNull+`]`),
		envelope(`{}`, propsA1, `{"task": "cap.add", "id": "x", "args": [1, 2], "kwargs": {}, "utc": true, "callbacks": [{"task": "cap.add", "args": [10], "kwargs": {}, "options": {"task_id": "1dbe…", "reply_to": "2f24…", "link": [{"task": "cap.add", "args": [100]}]}, "subtask_type": null, "immutable": false}], "timelimit": [30, 20], "taskset": "g", "chord": null}`),
		withHeaders(`, "redelivered": true, "x-custom": "hello"`),
		withHeaders(`, "eta": "2026-11-26T01:02:07.499966+00:00", "stamps": {"when": {"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}}`),
		envelope(headersA1, propsA1, `[[{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}, {"__type__": "base64", "__value__": "cmF3/w=="}, {"__type__": "bytes", "__value__": "text"}, {"__type__": "decimal", "__value__": "1.5"}], {}, null]`),
		compressed(CompressionZlib, bodyA1Zlib),
		compressed(CompressionBzip2, bodyA1Bz2),
		strings.Replace(strings.Replace(vecA1, ContentTypeJSON, ContentTypeMsgpack, 1), `"W1sy`, `"k5IBAoDA", "x": "`, 1),
	}
}

// checkRoundTrip is the decode property: never panic; any error is a *DecodeError; a decoded
// message re-encodes (for a 5.5 peer) to bytes that decode to an equal message and re-encode to
// the same bytes.
func checkRoundTrip(t *testing.T, raw []byte) (*Message, error) {
	t.Helper()
	m, err := Codec{}.Decode(raw)
	if err != nil {
		var de *DecodeError
		if !errors.As(err, &de) || !errors.Is(err, ErrDecode) {
			t.Fatalf("Decode error %T %v is not a *DecodeError", err, err)
		}
		return nil, err
	}
	c := Codec{PeerVersion: Celery55}
	out, err := c.Encode(m)
	if err != nil {
		if compressionKind(m.Compression) == "bzip2" && errors.Is(err, ErrUnsupportedCompression) {
			return m, nil // decode-only
		}
		t.Fatalf("Encode of a decoded message: %v\nmessage: %+v", err, m)
	}
	m2, err := c.Decode(out)
	if err != nil {
		t.Fatalf("Decode(Encode(m)): %v\nencoded: %s", err, out)
	}
	if d := diffMessages(withDefaults(m, c), m2); d != "" {
		t.Fatalf("Decode(Encode(m)) differs (-want +got):\n%s\nencoded: %s", d, out)
	}
	out2, err := c.Encode(m2)
	if err != nil || !bytes.Equal(out, out2) {
		t.Fatalf("re-encoding differs (%v):\n%s\n%s", err, out, out2)
	}
	return m, nil
}

func FuzzDecode(f *testing.F) {
	for _, s := range envelopeSeeds() {
		f.Add([]byte(s))
	}
	for _, b := range wireVectors(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkRoundTrip(t, raw)
	})
}

// Every captured envelope decodes (unless its content type or compression is one we refuse) and
// round-trips.
func TestCodecWireVectors(t *testing.T) {
	vectors := wireVectors(t)
	if len(vectors) == 0 {
		t.Fatal("no testdata/wire/*/*.msg.json captures: they are committed; re-create them with make capture")
	}
	for name, raw := range vectors {
		t.Run(filepath.Base(filepath.Dir(name))+"/"+filepath.Base(name), func(t *testing.T) {
			_, err := checkRoundTrip(t, raw)
			if err != nil && !errors.Is(err, ErrUnsupportedContentType) && !errors.Is(err, ErrUnsupportedCompression) {
				t.Fatalf("Decode: %v", err)
			}
		})
	}
}

// The seeds themselves decode and round-trip.
func TestCodecSeeds(t *testing.T) {
	for i, s := range envelopeSeeds() {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			if _, err := checkRoundTrip(t, []byte(s)); err != nil {
				t.Fatalf("Decode: %v", err)
			}
		})
	}
}

// Captures without dicts of several keys (Go sorts keys), naive datetimes or compression
// re-encode to exactly the bytes Python wrote.
func TestCodecWireVectorsByteIdentical(t *testing.T) {
	cases := []string{"add", "countdown", "countdown_expires", "eta_absolute", "eta_offset", "expires_absolute",
		"expires_seconds", "group-0", "group-1", "group-2", "headers_custom", "ignore_result", "link_link_error",
		"link_multi_immutable", "priority_0", "priority_3", "priority_5", "priority_9", "protocol1_add", "queue_other",
		"serializer_msgpack", "shadow", "time_limits", "types_bytes"}
	n := 0
	for _, version := range []struct {
		dir  string
		peer Version
	}{{"5.2.6", Celery52}, {"5.7.0", Celery55}} {
		for _, name := range cases {
			path := filepath.Join("..", "..", "testdata", "wire", version.dir, name+".msg.json")
			raw, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			n++
			t.Run(version.dir+"/"+name, func(t *testing.T) {
				c := Codec{PeerVersion: version.peer}
				m, err := c.Decode(raw)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				out, err := c.Encode(m)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				if !bytes.Equal(out, raw) {
					t.Fatalf("Encode(Decode(capture)) differs\n got: %s\nwant: %s", out, raw)
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("no testdata/wire captures: they are committed; re-create them with make capture")
	}
}

func FuzzUnmarshalValue(f *testing.F) {
	for _, s := range []string{
		`[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`,
		`[{"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}, {"__type__": "decimal", "__value__": "1.5"}]`,
		`{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`,
		`{"__type__": "base64", "__value__": "cmF3/w=="}`,
		`{"__type__": "bytes", "__value__": "text"}`,
		`{"__type__": "date", "__value__": "2030-01-02"}`,
		`{"__type__": "time", "__value__": "12:30:00.5+01:00"}`,
		`{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-26T01:09:03.219363+00:00", "task_id": "aaaaaaaa-0000-0000-0000-000000000001"}`,
		`{"exc_type": "ValueError", "exc_message": ["bad", 42], "exc_module": "builtins"}`,
		`"h\u00e9llo \ud83d\ude00 \ud800"`, `[NaN, -Infinity, 1e400, -0.0, 123456789012345678901234567890]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Codec{}.UnmarshalValue(data)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *DecodeError", err)
			}
			// Without markers and Python's NaN/Infinity we accept exactly what encoding/json accepts.
			if json.Valid(data) && !bytes.Contains(data, []byte("__")) && !strings.Contains(err.Error(), "nesting") {
				t.Fatalf("rejected valid JSON %q: %v", data, err)
			}
			return
		}
		if !bytes.Contains(data, []byte("__")) && !bytes.Contains(data, []byte("NaN")) && !bytes.Contains(data, []byte("Infinity")) {
			d := json.NewDecoder(bytes.NewReader(data))
			d.UseNumber()
			var want any
			if err := d.Decode(&want); err != nil || d.InputOffset() != int64(len(bytes.TrimRight(data, " \t\r\n"))) {
				t.Fatalf("accepted %q, which encoding/json rejects: %v", data, err)
			}
			if diff := cmp.Diff(want, v); diff != "" {
				t.Fatalf("differs from encoding/json (-want +got):\n%s", diff)
			}
		}
		c := Codec{PeerVersion: Celery55}
		out, err := c.MarshalValue(v)
		if err != nil {
			t.Fatalf("MarshalValue of a decoded value: %v", err)
		}
		v2, err := c.UnmarshalValue(out)
		if err != nil {
			t.Fatalf("UnmarshalValue(MarshalValue(v)): %v\n%s", err, out)
		}
		if diff := cmp.Diff(v, v2); diff != "" {
			t.Fatalf("round trip differs (-want +got):\n%s", diff)
		}
		if out2, _ := c.MarshalValue(v2); !bytes.Equal(out, out2) {
			t.Fatalf("re-marshal differs:\n%s\n%s", out, out2)
		}
	})
}

func FuzzParsePyTime(f *testing.F) {
	for _, s := range []string{"2026-11-26T01:02:07.499966+00:00", "2030-01-02T03:04:05+00:00", "2030-01-03T00:00:00+00:00",
		"2026-11-26T01:01:48.086420", "2030-01-02T03:04:05Z", "2030-01-02 03:04:05", "2030-01-02T03:04:05.123-05:30",
		"2030-01-02", "2030-01-02T03:04:05+05:30:15", "9999-12-31T23:59:59.999999+0100"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParsePyTime(s)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error %v does not wrap ErrDecode", err)
			}
			return
		}
		if tm.Nanosecond()%1000 != 0 || !pyTimeRangeOK(tm) {
			t.Fatalf("ParsePyTime(%q) = %v: not a Python datetime", s, tm)
		}
		iso := PyISOFormat(tm)
		back, err := ParsePyTime(iso)
		if err != nil {
			t.Fatalf("ParsePyTime(PyISOFormat(%v) = %q): %v", tm, iso, err)
		}
		_, off1 := tm.Zone()
		_, off2 := back.Zone()
		if !back.Equal(tm) || off1 != off2 || PyISOFormat(back) != iso {
			t.Fatalf("%q → %v → %q → %v", s, tm, iso, back)
		}
	})
}
