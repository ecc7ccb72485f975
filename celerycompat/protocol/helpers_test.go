package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
)

// The JSON comparison helpers of celerycompat's backend tests, for the exception dict tests here.

// jsonMeaning decodes JSON with numbers kept as json.Number, for comparison by meaning.
func jsonMeaning(t testing.TB, data []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("invalid JSON %q: %v", data, err)
	}
	return v
}

// topKeys lists the keys of a JSON object in the order they are written.
func topKeys(t testing.TB, data []byte) []string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %q", data)
	}
	var keys []string
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}
