package rig

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// FuzzDecodeSubmitBody: the API's body decoding never panics, refuses with a client error
// (4xx), and what it accepts fits its promise: nesting within MaxDataDepth and an encoded size
// (Go's callback encoding, no HTML escaping) within the projection checkData used.
func FuzzDecodeSubmitBody(f *testing.F) {
	for _, s := range []string{
		`{"task_index": 1, "content": "test task 1"}`, `{}`, `[]`, `null`, `{"a":`, `{} {}`,
		`{"n": 1e400, "m": -0.0, "i": 123456789012345678901234567890}`, `{"s": "<>&\u2028\ud83d\ude00\u0000"}`,
		`{"d": ` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`, `{"测": ["二", null, true, 1.5]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		data, err := decodeObject(body)
		if err != nil {
			return
		}
		const limit = 1 << 16
		if err := checkData(data, limit); err != nil {
			var he *echo.HTTPError
			if !errors.As(err, &he) || he.Code < 400 || he.Code >= 500 {
				t.Fatalf("checkData refused with %v, want a 4xx", err)
			}
			return
		}
		if d := depth(data, 0); d > MaxDataDepth {
			t.Fatalf("accepted depth %d", d)
		}
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(data); err != nil {
			t.Fatalf("accepted data does not encode: %v", err)
		}
		if got, bound := int64(b.Len()-1), worstJSONSize(data); got > bound {
			t.Fatalf("encoded %d bytes, projected at most %d: %s", got, bound, b.Bytes())
		}
	})
}

// TestCheckDataStatus: the refusals carry the status the API answers.
func TestCheckDataStatus(t *testing.T) {
	deep := any(map[string]any{})
	for range MaxDataDepth {
		deep = []any{deep}
	}
	var he *echo.HTTPError
	if err := checkData(deep, 1<<20); !errors.As(err, &he) || he.Code != http.StatusBadRequest {
		t.Errorf("too deep: %v", err)
	}
	if err := checkData(map[string]any{"s": strings.Repeat("é", 1000)}, 4096); !errors.As(err, &he) || he.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("too large once escaped: %v", err)
	}
	if err := checkData(map[string]any{"s": strings.Repeat("x", 1000)}, 4096); err != nil {
		t.Errorf("small data refused: %v", err)
	}
}
