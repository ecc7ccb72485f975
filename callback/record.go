package callback

import (
	"bytes"
	"errors"
	"strconv"
)

// recordVersion starts every outbox record.
const recordVersion = "cb1"

// record is the immutable outbox entry of one event, stored in Keys.Events as
//
//	cb1 <created, Unix ms>\n<destination URL>\n<payload: the JSON body without "attempt">
//
// Splitting it costs nothing on the delivery path (no JSON decoding), and it stays readable with
// redis-cli. A URL cannot contain a newline (url.Parse refuses control characters), and the
// payload comes last, so the two cuts are unambiguous.
type record struct {
	URL     string
	Created int64 // Unix ms
	Payload []byte
}

func (r record) encode() []byte {
	b := make([]byte, 0, len(recordVersion)+len(r.URL)+len(r.Payload)+24)
	b = append(b, recordVersion...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.Created, 10)
	b = append(b, '\n')
	b = append(b, r.URL...)
	b = append(b, '\n')
	return append(b, r.Payload...)
}

var errCorruptRecord = errors.New("not a " + recordVersion + " record")

// decodeRecord parses an encoded record. Payload aliases b.
func decodeRecord(b []byte) (record, error) {
	head, rest, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return record{}, errCorruptRecord
	}
	version, created, ok := bytes.Cut(head, []byte{' '})
	if !ok || string(version) != recordVersion {
		return record{}, errCorruptRecord
	}
	url, payload, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok {
		return record{}, errCorruptRecord
	}
	ms, err := strconv.ParseInt(string(created), 10, 64)
	if err != nil || len(payload) < 2 || payload[0] != '{' || payload[len(payload)-1] != '}' {
		return record{}, errCorruptRecord
	}
	return record{URL: string(url), Created: ms, Payload: payload}, nil
}
