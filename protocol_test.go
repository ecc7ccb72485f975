package celerybridge_test

// protocol_test.go checks celerycompat's public API against wire vectors captured from real
// Python Celery (testdata/wire/<celery version>/, written by testdata/python/capture.py; see
// testdata/wire/README.md): every captured message decodes to the values Python sent and
// survives a decode → encode → decode round trip, every captured result reads back with its
// state and value, and the Go encoder's output for fixed inputs matches golden files
// (testdata/wire/go/, refreshed with `go test -run TestGolden -update .`).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/gomodule/redigo/redis"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/wire/go")

// wireDirs lists the captured versions; there must be at least the two peers.
func wireDirs(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob("testdata/wire/5.*")
	if err != nil || len(dirs) < 2 {
		t.Fatalf("captured wire vectors missing (%v): run `make capture`", err)
	}
	return dirs
}

func dirVersion(t *testing.T, dir string) cc.Version {
	t.Helper()
	v, err := protocol.ParseVersion(filepath.Base(dir))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

type expectMsg struct {
	List     string `json:"list"`
	Envelope struct {
		ContentType string                     `json:"content-type"`
		Headers     map[string]json.RawMessage `json:"headers"`
		Properties  struct {
			Priority     int    `json:"priority"`
			DeliveryTag  string `json:"delivery_tag"`
			DeliveryInfo struct {
				Exchange   string `json:"exchange"`
				RoutingKey string `json:"routing_key"`
			} `json:"delivery_info"`
		} `json:"properties"`
	} `json:"envelope"`
	Body json.RawMessage `json:"body"`
}

// jsonEqual compares two JSON texts by meaning (key order and spacing aside).
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return cmp.Equal(x, y)
}

var knownHeaders = map[string]bool{
	"lang": true, "task": true, "id": true, "shadow": true, "eta": true, "expires": true, "group": true,
	"group_index": true, "retries": true, "timelimit": true, "root_id": true, "parent_id": true,
	"argsrepr": true, "kwargsrepr": true, "origin": true, "ignore_result": true, "stamped_headers": true,
	"stamps": true, "replaced_task_nesting": true, "compression": true, "redelivered": true,
}

func TestCapturedMessagesDecode(t *testing.T) {
	for _, dir := range wireDirs(t) {
		peer := dirVersion(t, dir)
		codec := cc.Codec{PeerVersion: peer}
		files, _ := filepath.Glob(filepath.Join(dir, "*.msg.json"))
		if len(files) < 25 {
			t.Fatalf("%s: only %d captured messages", dir, len(files))
		}
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".msg.json")
			t.Run(filepath.Base(dir)+"/"+name, func(t *testing.T) {
				raw, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				var exp expectMsg
				expRaw, err := os.ReadFile(strings.TrimSuffix(f, ".msg.json") + ".expect.json")
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(expRaw, &exp); err != nil {
					t.Fatal(err)
				}
				m, err := codec.Decode(raw)
				if exp.Envelope.ContentType == protocol.ContentTypePickle {
					var cte *protocol.ContentTypeError
					if !errors.As(err, &cte) || cte.ContentType != protocol.ContentTypePickle {
						t.Fatalf("pickle message: %v, want a ContentTypeError naming it", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				checkDecoded(t, codec, m, &exp)
				// decode -> encode -> decode loses nothing. bzip2 is read but not written (Go's
				// standard library only decompresses it): such a message is re-encoded with zlib.
				if m.Compression == protocol.CompressionBzip2 {
					m.Compression = protocol.CompressionZlib
				}
				enc, err := codec.Encode(m)
				if err != nil {
					t.Fatalf("re-encode: %v", err)
				}
				m2, err := codec.Decode(enc)
				if err != nil {
					t.Fatalf("decode of the re-encoded message: %v", err)
				}
				if d := cmp.Diff(m, m2, cmpopts.EquateEmpty()); d != "" {
					t.Fatalf("round trip changed the message (-decoded +re-decoded):\n%s", d)
				}
			})
		}
	}
}

func checkDecoded(t *testing.T, codec cc.Codec, m *cc.Message, exp *expectMsg) {
	t.Helper()
	h := exp.Envelope.Headers
	p := exp.Envelope.Properties
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(h[k], &s)
		return s
	}
	if m.Protocol != 1 {
		if m.ID != str("id") || m.Task != str("task") || m.RootID != str("root_id") || m.Origin != str("origin") {
			t.Errorf("headers: id %q task %q root %q origin %q; want %s %s %s %s", m.ID, m.Task, m.RootID, m.Origin,
				str("id"), str("task"), str("root_id"), str("origin"))
		}
		for _, k := range []string{"eta", "expires"} {
			want := str(k)
			got := m.ETA
			if k == "expires" {
				got = m.Expires
			}
			if (want == "") != (got == nil) {
				t.Errorf("%s: got %v, want %q", k, got, want)
			} else if want != "" {
				wt, err := protocol.ParsePyTime(want)
				if err != nil || !wt.Equal(*got) {
					t.Errorf("%s: got %v, want %s", k, got, want)
				}
			}
		}
		for k, v := range h {
			if knownHeaders[k] {
				continue
			}
			if got, ok := m.ExtraHeaders[k]; !ok || !jsonEqual(t, got, v) {
				t.Errorf("custom header %s: got %s, want %s", k, got, v)
			}
		}
	}
	if m.Priority != p.Priority || m.DeliveryTag != p.DeliveryTag || m.DeliveryInfo.RoutingKey != p.DeliveryInfo.RoutingKey ||
		m.DeliveryInfo.Exchange != p.DeliveryInfo.Exchange {
		t.Errorf("properties: priority %d tag %q route %q/%q; want %+v", m.Priority, m.DeliveryTag,
			m.DeliveryInfo.Exchange, m.DeliveryInfo.RoutingKey, p)
	}
	// args and kwargs, by meaning: encoding Go's decoded values for this peer gives Python's JSON.
	var wantArgs, wantKwargs json.RawMessage
	var body []json.RawMessage
	var bodyObj struct {
		ID      string          `json:"id"`
		Task    string          `json:"task"`
		Args    json.RawMessage `json:"args"`
		Kwargs  json.RawMessage `json:"kwargs"`
		Decoded json.RawMessage `json:"decoded"`
	}
	switch {
	case json.Unmarshal(exp.Body, &body) == nil && len(body) == 3:
		wantArgs, wantKwargs = body[0], body[1]
	case json.Unmarshal(exp.Body, &bodyObj) == nil && bodyObj.Decoded != nil:
		if json.Unmarshal(bodyObj.Decoded, &body) != nil || len(body) != 3 {
			t.Fatalf("msgpack expectation %s", bodyObj.Decoded)
		}
		wantArgs, wantKwargs = body[0], body[1]
	case bodyObj.Task != "":
		if m.Protocol != 1 || m.ID != bodyObj.ID || m.Task != bodyObj.Task {
			t.Errorf("protocol 1: got protocol %d id %q task %q, want 1 %q %q", m.Protocol, m.ID, m.Task, bodyObj.ID, bodyObj.Task)
		}
		wantArgs, wantKwargs = bodyObj.Args, bodyObj.Kwargs
	default:
		t.Fatalf("unexpected body expectation %s", exp.Body)
	}
	gotArgs, err := codec.MarshalValue(m.Args)
	if err != nil {
		t.Fatal(err)
	}
	gotKwargs, err := codec.MarshalValue(m.Kwargs)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(t, gotArgs, wantArgs) || !jsonEqual(t, gotKwargs, wantKwargs) {
		t.Errorf("args %s kwargs %s; want %s %s", gotArgs, gotKwargs, wantArgs, wantKwargs)
	}
}

type expectResult struct {
	Key    string `json:"key"`
	Raw    string `json:"raw"`
	Expect struct {
		Status   string          `json:"status"`
		TaskID   string          `json:"task_id"`
		Result   json.RawMessage `json:"result"`
		Children json.RawMessage `json:"children"`
		DateDone *string         `json:"date_done"`
	} `json:"expect"`
}

// TestCapturedResultsRead stores each captured result value byte for byte (in an in-memory
// Redis: this test is about decoding, not Redis) and reads it through the public Backend API.
func TestCapturedResultsRead(t *testing.T) {
	mr := miniredis.RunT(t)
	pool := &redis.Pool{Dial: func() (redis.Conn, error) { return redis.Dial("tcp", mr.Addr()) }}
	defer pool.Close()
	for _, dir := range wireDirs(t) {
		codec := cc.Codec{PeerVersion: dirVersion(t, dir)}
		backend, err := cc.NewBackend(pool, cc.BackendConfig{Codec: codec})
		if err != nil {
			t.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "result_*.result.json"))
		if len(files) < 10 {
			t.Fatalf("%s: only %d captured results", dir, len(files))
		}
		for _, f := range files {
			t.Run(filepath.Base(dir)+"/"+strings.TrimSuffix(filepath.Base(f), ".result.json"), func(t *testing.T) {
				var exp expectResult
				b, _ := os.ReadFile(f)
				if err := json.Unmarshal(b, &exp); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(exp.Key, "celery-task-meta-") {
					// Group metadata (result_group_saved) is checked by the backend tests.
					if !strings.HasPrefix(exp.Key, "celery-taskset-meta-") {
						t.Fatalf("unexpected result key %q", exp.Key)
					}
					return
				}
				mr.Set(exp.Key, exp.Raw)
				meta, err := backend.GetMeta(context.Background(), strings.TrimPrefix(exp.Key, "celery-task-meta-"))
				if err != nil {
					t.Fatalf("GetMeta: %v", err)
				}
				if string(meta.Status) != exp.Expect.Status || meta.TaskID != exp.Expect.TaskID {
					t.Fatalf("status %s id %s, want %s %s", meta.Status, meta.TaskID, exp.Expect.Status, exp.Expect.TaskID)
				}
				if te, ok := meta.Result.(*cc.TaskError); ok {
					var want struct {
						ExcType    string `json:"exc_type"`
						ExcModule  string `json:"exc_module"`
						ExcMessage []any  `json:"exc_message"`
					}
					_ = json.Unmarshal(exp.Expect.Result, &want)
					if te.ExcType != want.ExcType || te.ExcModule != want.ExcModule || len(te.ExcMessage) != len(want.ExcMessage) {
						t.Fatalf("exception %+v, want %+v", te, want)
					}
				} else {
					got, err := codec.MarshalValue(meta.Result)
					if err != nil || !jsonEqual(t, got, exp.Expect.Result) {
						t.Fatalf("result %s (%v), want %s", got, err, exp.Expect.Result)
					}
				}
				if exp.Expect.DateDone != nil {
					want, err := protocol.ParsePyTime(*exp.Expect.DateDone)
					if err != nil || meta.DateDone == nil || !meta.DateDone.Equal(want) {
						t.Fatalf("date_done %v, want %s", meta.DateDone, *exp.Expect.DateDone)
					}
				}
			})
		}
	}
}

// goldenCases are Go messages with fixed ids and times, encoded for each peer version.
func goldenCases() map[string]*cc.Message {
	eta := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)
	hard, soft := 30.0, 20.0
	idx := 1
	base := func(id string) *cc.Message {
		return &cc.Message{Lang: "go", Task: "cap.add", ID: id, RootID: id, Args: []any{2, 3}, Kwargs: map[string]any{},
			ArgsRepr: "(2, 3)", KwargsRepr: "{}", Origin: "gen1@golden", ReplyTo: "00000000-0000-0000-0000-0000000000ff",
			DeliveryTag: "tag-" + id, DeliveryInfo: cc.DeliveryInfo{RoutingKey: "celery"}}
	}
	full := base("00000000-0000-4000-8000-00000000f002")
	full.ETA, full.Expires = &eta, &eta
	full.TimeLimit = cc.TimeLimit{Hard: &hard, Soft: &soft}
	full.Group, full.GroupIndex, full.ParentID, full.Priority, full.Retries = "g-1", &idx, "p-1", 5, 2
	full.Kwargs = map[string]any{"text": "中文 🎉", "when": eta}
	full.ExtraHeaders = map[string]json.RawMessage{"x-custom": json.RawMessage(`"hello"`)}
	full.Embed = cc.Embed{
		Callbacks: []cc.Signature{{Task: "cap.add", Args: []any{10}, Kwargs: map[string]any{}, Options: map[string]any{}}},
		Chain:     []cc.Signature{{Task: "cap.add", Args: []any{100}, Kwargs: map[string]any{}, Options: map[string]any{"task_id": "c-1"}}},
	}
	p1 := base("00000000-0000-4000-8000-00000000f003")
	p1.Protocol = 1
	return map[string]*cc.Message{"plain": base("00000000-0000-4000-8000-00000000f001"), "full": full, "protocol1": p1}
}

// TestGoldenGoMessages pins what Go writes for each peer version, byte for byte.
func TestGoldenGoMessages(t *testing.T) {
	names := make([]string, 0)
	cases := goldenCases()
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, peer := range []string{"5.2", "5.5"} {
		v, _ := protocol.ParseVersion(peer)
		codec := cc.Codec{PeerVersion: v}
		for _, n := range names {
			t.Run(peer+"/"+n, func(t *testing.T) {
				got, err := codec.Encode(cases[n])
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join("testdata", "wire", "go", peer+"-"+n+".msg.json")
				if *update {
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test -run TestGolden -update .)", err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("Go's encoding changed:\n got %s\nwant %s", got, want)
				}
			})
		}
	}
}
