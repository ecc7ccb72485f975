// Package protocol is Celery's wire format, with no I/O: what goes into a Redis list or key and
// how to read it back, for the peers celerycompat talks to (Celery 5.2 to 5.7 and kombu).
//
// Inside:
//   - Message and its parts (DeliveryInfo, TimeLimit, Signature, Embed, ...): task messages in
//     protocol 2 (Celery 4+) and protocol 1, and the kombu envelope around them.
//   - Codec: the JSON and msgpack serializers, base64 bodies, zlib and bzip2 compression, size
//     limits; MarshalValue/UnmarshalValue for result values with kombu's JSON markers
//     ({"__type__": "datetime", ...}: Date, TimeOfDay, Decimal, UUID, bytes).
//   - AppendJSON, DecodeJSON, ScanJSONObject and DecodeEnvelope for the JSON that events and
//     remote control carry, written as Python's json.dumps writes it (PyDict keeps key order).
//   - Python's time formats (PyISOFormat, ParsePyTime, Naive) and repr (PyRepr, ArgsRepr).
//   - The result backend's format: ResultMeta and ResultFormat (the celery-task-meta JSON, its
//     key order and date_done per peer version), TaskError, ErrorToTaskError, NewTaskError and
//     the exception dict (Codec.MarshalTaskError, TaskErrorFromValue); task States; Versions.
//   - The errors of all of that: ErrDecode, ErrEncode, ErrUnsupportedContentType,
//     ErrUnsupportedCompression, ErrBodyTooLarge, ErrInvalidConfig, *DecodeError,
//     *ContentTypeError.
//
// Brokers, result backends, producers and workers live in package celerycompat, which re-exports
// the names its users need (celerycompat.Message is protocol.Message, and so on).
//
// Imports: only the standard library and the codec library it already uses
// (github.com/vmihailenco/msgpack/v5). Never a Redis client, never celerycompat: a test
// (TestPure) checks this, so the wire format can be used and fuzzed on its own.
package protocol
