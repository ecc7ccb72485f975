package protocol

import (
	"bytes"
	"encoding/json"
)

// WritePyString writes s as a JSON string the way Python's json.dumps does (ensure_ascii).
func WritePyString(buf *bytes.Buffer, s string) {
	q, err := Codec{}.MarshalValue(s)
	if err != nil { // cannot happen for a string; stay valid regardless
		q, _ = json.Marshal(s)
	}
	buf.Write(q)
}

// WritePyStringOrNull writes s like WritePyString, and "" as null (how Celery writes a None
// string field).
func WritePyStringOrNull(buf *bytes.Buffer, s string) {
	if s == "" {
		buf.WriteString("null")
		return
	}
	WritePyString(buf, s)
}
