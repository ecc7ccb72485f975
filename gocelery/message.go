package gocelery

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/google/uuid"
)

// CeleryMessage is a kombu envelope as it sits in a Redis list: the base64 task body plus its
// headers and properties. Delay no longer builds one (the engine writes the envelope); it is
// what SendCeleryMessage accepts, for programs that build messages themselves.
type CeleryMessage struct {
	Body            string                 `json:"body"`
	Headers         map[string]interface{} `json:"headers,omitempty"`
	ContentType     string                 `json:"content-type"`
	Properties      CeleryProperties       `json:"properties"`
	ContentEncoding string                 `json:"content-encoding"`
}

// CeleryProperties is the envelope's "properties" object.
type CeleryProperties struct {
	BodyEncoding  string             `json:"body_encoding"`
	CorrelationID string             `json:"correlation_id"`
	ReplyTo       string             `json:"reply_to"`
	DeliveryInfo  CeleryDeliveryInfo `json:"delivery_info"`
	DeliveryMode  int                `json:"delivery_mode"`
	DeliveryTag   string             `json:"delivery_tag"`
}

// CeleryDeliveryInfo is the envelope's "properties.delivery_info" object.
type CeleryDeliveryInfo struct {
	Priority   int    `json:"priority"`
	RoutingKey string `json:"routing_key"`
	Exchange   string `json:"exchange"`
}

// NewCeleryMessage wraps an encoded protocol 1 task body (TaskMessage.Encode) in an envelope a
// Celery worker accepts: JSON, UTF-8, base64 body, the default exchange and the "celery" routing
// key, fresh correlation id and delivery tag.
func NewCeleryMessage(encodedTaskMessage string) *CeleryMessage {
	return &CeleryMessage{
		Body:            encodedTaskMessage,
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		Properties: CeleryProperties{
			BodyEncoding:  "base64",
			CorrelationID: uuid.NewString(),
			ReplyTo:       uuid.NewString(),
			DeliveryInfo:  CeleryDeliveryInfo{RoutingKey: "celery"},
			DeliveryMode:  2,
			DeliveryTag:   uuid.NewString(),
		},
	}
}

// GetTaskMessage decodes the envelope's body as a protocol 1 task. It returns nil when the
// envelope is not JSON in base64 UTF-8 or the body does not decode; DecodeTaskMessage says why.
func (cm *CeleryMessage) GetTaskMessage() *TaskMessage {
	tm, err := cm.DecodeTaskMessage()
	if err != nil {
		return nil
	}
	return tm
}

// DecodeTaskMessage is GetTaskMessage returning the reason a message cannot be read as an error
// (wrapping ErrUnsupportedMessage).
func (cm *CeleryMessage) DecodeTaskMessage() (*TaskMessage, error) {
	switch {
	case cm.ContentType != "application/json":
		return nil, fmt.Errorf("%w: content type %q", ErrUnsupportedMessage, cm.ContentType)
	case cm.Properties.BodyEncoding != "base64":
		return nil, fmt.Errorf("%w: body encoding %q", ErrUnsupportedMessage, cm.Properties.BodyEncoding)
	case cm.ContentEncoding != "utf-8":
		return nil, fmt.Errorf("%w: content encoding %q", ErrUnsupportedMessage, cm.ContentEncoding)
	}
	tm, err := DecodeTaskMessage(cm.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedMessage, err)
	}
	return tm, nil
}

// TaskMessage is a task in Celery's protocol 1 body layout (everything in the body).
// RedisCeleryBroker.GetTaskMessage returns protocol 2 tasks in this shape too.
type TaskMessage struct {
	ID      string                 `json:"id"`
	Task    string                 `json:"task"`
	Args    []interface{}          `json:"args"`
	Kwargs  map[string]interface{} `json:"kwargs"`
	Retries int                    `json:"retries"`
	ETA     *string                `json:"eta"`
	Expires *time.Time             `json:"expires"`
}

// DecodeTaskMessage decodes a base64 protocol 1 task body.
func DecodeTaskMessage(encodedBody string) (*TaskMessage, error) {
	raw, err := base64.StdEncoding.DecodeString(encodedBody)
	if err != nil {
		return nil, fmt.Errorf("gocelery: task body is not base64: %w", err)
	}
	var tm TaskMessage
	if err := json.Unmarshal(raw, &tm); err != nil {
		return nil, fmt.Errorf("gocelery: task body is not a protocol 1 task: %w", err)
	}
	return &tm, nil
}

// Encode returns the task as base64 JSON, the body of a protocol 1 message. Nil Args are
// written as [] (a worker rejects a task without args).
func (tm *TaskMessage) Encode() (string, error) {
	out := *tm
	if out.Args == nil {
		out.Args = []interface{}{}
	}
	if out.Kwargs == nil {
		out.Kwargs = map[string]interface{}{}
	}
	raw, err := json.Marshal(&out)
	if err != nil {
		return "", fmt.Errorf("gocelery: encode task %s: %w", tm.ID, err)
	}
	return base64.StdEncoding.EncodeToString(raw), nil
}

// ResultMessage is a task's stored result (the celery-task-meta-<id> value).
type ResultMessage struct {
	ID        string        `json:"task_id"`
	Status    string        `json:"status"`
	Traceback interface{}   `json:"traceback"`
	Result    interface{}   `json:"result"`
	Children  []interface{} `json:"children"`
}

// GetRealValue returns the value held by val as a plain Go value for JSON: signed integers as
// int64, unsigned as uint64, floats as float64, strings, bools, slices and maps as they are.
// Anything else (nil val, structs, pointers, channels) is nil.
func GetRealValue(val *reflect.Value) interface{} {
	if val == nil || !val.IsValid() {
		return nil
	}
	switch val.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return val.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return val.Uint()
	case reflect.Float32, reflect.Float64:
		return val.Float()
	case reflect.String:
		return val.String()
	case reflect.Bool:
		return val.Bool()
	case reflect.Slice, reflect.Map:
		return val.Interface()
	default:
		return nil
	}
}
