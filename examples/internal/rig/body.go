package rig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// Limits on the task data POST /submit-task accepts, beyond Config.MaxBodyBytes.
const (
	// MaxDataDepth bounds how deeply arrays and objects nest in the task data. Every peer on
	// the path has a limit of its own (celerycompat's codec 1000 around the whole message,
	// Python's recursion limit 1000 frames around its json decoder); this stays far below all
	// of them, so a task the API accepts can be encoded, run by either kind of worker and
	// reported back.
	MaxDataDepth = 200
	// callbackReserve is what a callback adds around the task data: the ids, status, event id,
	// timestamp and the result's own fields, as the Python worker writes them (about 500
	// bytes), rounded up.
	callbackReserve = 1 << 10
)

// readJSONBody checks the request is JSON (415 otherwise: a form or text/plain POST is what a
// web page can send cross-site without a CORS preflight) and reads its body as it arrives, up to
// limit bytes (413 beyond).
func readJSONBody(c echo.Context, limit int64) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
	if err != nil || mt != echo.MIMEApplicationJSON {
		return nil, echo.NewHTTPError(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", mbe.Limit))
		}
		return nil, echo.NewHTTPError(http.StatusBadRequest, "cannot read the body").SetInternal(err)
	}
	return body, nil
}

// decodeObject parses body as exactly one JSON object (numbers kept exact). Its errors are
// client errors, worded for the client.
func decodeObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("body must be a JSON object, got an empty body")
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("body is not valid JSON (at byte %d)", se.Offset)
		}
		return nil, errors.New("body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("body must be a single JSON object, got data after it")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("body must be a JSON object, got %s", jsonKind(v))
	}
	return m, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}

// checkData refuses data that could not make it along the whole path: nested deeper than
// MaxDataDepth, or whose callback could outgrow maxCallback bytes.
func checkData(data any, maxCallback int64) error {
	if depth(data, 0) > MaxDataDepth {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("data nests deeper than %d levels", MaxDataDepth))
	}
	if n := worstJSONSize(data); n > maxCallback-callbackReserve {
		return echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf(
			"data too large for its callback: up to %d bytes encoded, the limit is %d", n+callbackReserve, maxCallback))
	}
	return nil
}

// depth is how deeply arrays and objects nest in v (0 for a scalar), stopping early past the
// limit.
func depth(v any, d int) int {
	if d > MaxDataDepth {
		return d
	}
	deepest := d
	switch x := v.(type) {
	case map[string]any:
		deepest = d + 1
		for _, e := range x {
			deepest = max(deepest, depth(e, d+1))
		}
	case []any:
		deepest = d + 1
		for _, e := range x {
			deepest = max(deepest, depth(e, d+1))
		}
	}
	return deepest
}

// worstJSONSize bounds the size of v encoded by any worker's callback sender: the larger of Go's
// (UTF-8 as is, no HTML escaping) and Python's requests (json.dumps with ensure_ascii: every
// non-ASCII character as \uXXXX, a surrogate pair beyond the BMP; ", " and ": " separators;
// a float's repr up to 24 characters). Python's is never smaller, so it is what is counted.
func worstJSONSize(v any) int64 {
	switch x := v.(type) {
	case nil:
		return 4
	case bool:
		return 5
	case json.Number:
		s := string(x)
		if bytes.ContainsAny([]byte(s), ".eE") {
			return int64(max(len(s), 24)) // Python reads a float, writes its repr
		}
		return int64(len(s))
	case string:
		return stringSize(x)
	case []any:
		n := int64(2)
		for i, e := range x {
			if i > 0 {
				n += 2
			}
			n += worstJSONSize(e)
		}
		return n
	case map[string]any:
		n, i := int64(2), 0
		for k, e := range x {
			if i > 0 {
				n += 2
			}
			n += stringSize(k) + 2 + worstJSONSize(e)
			i++
		}
		return n
	default:
		return 24 // float64 and other numbers: decodeObject keeps json.Number, so not reached
	}
}

// stringSize is the size of s as a JSON string written with ensure_ascii.
func stringSize(s string) int64 {
	n := int64(2)
	for _, r := range s {
		switch {
		case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t' || r == '\b' || r == '\f':
			n += 2
		case r < 0x20:
			n += 6
		case r < utf8.RuneSelf:
			n++
		case r > 0xFFFF:
			n += 12
		default:
			n += 6
		}
	}
	return n
}

// decodeInto decodes one JSON value from body into v.
func decodeInto(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}
