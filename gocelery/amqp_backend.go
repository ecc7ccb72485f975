package gocelery

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// resultQueueExpires is the x-expires of a result queue (one day, in milliseconds, as gocelery
// and Celery's old amqp backend declared it): RabbitMQ deletes a result queue nobody has read
// or declared for that long.
const resultQueueExpires = int32(24 * time.Hour / time.Millisecond)

// AMQPCeleryBackend stores results as gocelery did on RabbitMQ: each result is one JSON message
// (ResultMessage) in a queue named after the task id without its dashes, declared durable,
// auto-delete, with x-expires of one day.
//
// It is for Go-to-Go use only. Celery 5 removed that "amqp" result backend, so no Python Celery
// 5 client reads these results and no Python worker writes them: in a deployment with Python
// peers use RedisCeleryBackend (results as Python stores them, Get woken by PUBLISH) with an
// AMQPCeleryBroker for the tasks. Programs still on gocelery read and write the same queues.
//
// Unlike gocelery, reading does not consume: GetResult takes the message and puts it back, so
// Ready, AsyncGet and Get can all read it (gocelery's first read removed it and a second one
// blocked for ever). SetResult waits for the broker's confirm, so the worker acknowledges a task
// only once its result is held. A result stays until its queue expires, a day after it was last
// read. If two results are stored for one task, the first one is read.
//
// The backend works on a channel of its own, opened from Connection; Channel is kept for the
// program's own use. It is safe for concurrent use (operations are serialized).
type AMQPCeleryBackend struct {
	*amqp.Channel
	// Connection is the connection the backend's channel is opened on.
	Connection *amqp.Connection
	// Host is the broker URL Reconnect dials (set by NewAMQPCeleryBackend).
	Host string

	mu      sync.Mutex
	ch      *amqp.Channel // confirm mode; reopened when a channel error closed it
	chConn  *amqp.Connection
	dialErr error
}

// NewAMQPCeleryBackend connects to the broker at host and returns a backend on that
// connection. When the connection fails, GetResult and SetResult return the error until
// Reconnect succeeds.
func NewAMQPCeleryBackend(host string) *AMQPCeleryBackend {
	conn, ch, err := NewAMQPConnectionContext(context.Background(), host)
	b := NewAMQPCeleryBackendByConnAndChannel(conn, ch)
	b.Host, b.dialErr = host, err
	return b
}

// NewAMQPCeleryBackendByConnAndChannel returns a backend on conn (and channel, kept as
// Channel). The caller owns both.
func NewAMQPCeleryBackendByConnAndChannel(conn *amqp.Connection, channel *amqp.Channel) *AMQPCeleryBackend {
	return &AMQPCeleryBackend{Channel: channel, Connection: conn}
}

// Reconnect closes Connection and connects again to Host, as gocelery did. gocelery panicked
// when that failed; here the error is returned by the next GetResult or SetResult.
func (b *AMQPCeleryBackend) Reconnect() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Connection != nil {
		_ = b.Connection.Close()
	}
	conn, ch, err := NewAMQPConnectionContext(context.Background(), b.Host)
	b.Connection, b.Channel, b.dialErr = conn, ch, err
	b.ch, b.chConn = nil, nil
}

// channel returns the backend's confirm-mode channel, opening one when needed. Called with
// b.mu held.
func (b *AMQPCeleryBackend) channel() (*amqp.Channel, error) {
	if b.dialErr != nil {
		return nil, b.dialErr
	}
	if b.Connection == nil {
		return nil, fmt.Errorf("%w: AMQPCeleryBackend has no Connection", ErrConfig)
	}
	if b.ch != nil && !b.ch.IsClosed() && b.chConn == b.Connection {
		return b.ch, nil
	}
	ch, err := b.Connection.Channel()
	if err != nil {
		return nil, fmt.Errorf("gocelery: result backend channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("gocelery: result backend confirm.select: %w", err)
	}
	b.ch, b.chConn = ch, b.Connection
	return ch, nil
}

// resultQueue is the queue holding taskID's result, declared as gocelery declared it.
func resultQueue(ch *amqp.Channel, taskID string) (string, error) {
	name := strings.ReplaceAll(taskID, "-", "")
	if name == "" {
		return "", fmt.Errorf("%w: empty task id", ErrConfig)
	}
	if _, err := ch.QueueDeclare(name, true, true, false, false, amqp.Table{"x-expires": resultQueueExpires}); err != nil {
		return "", fmt.Errorf("gocelery: declare result queue %s: %w", name, err)
	}
	return name, nil
}

// GetResult reads taskID's result without waiting and leaves it in its queue. No result yet
// is an error wrapping ErrResultNotAvailable; a message that is not a result one wrapping
// ErrUnsupportedMessage (the message stays where it is).
func (b *AMQPCeleryBackend) GetResult(taskID string) (*ResultMessage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, err := b.channel()
	if err != nil {
		return nil, err
	}
	q, err := resultQueue(ch, taskID)
	if err != nil {
		return nil, err
	}
	d, ok, err := ch.Get(q, false)
	if err != nil {
		return nil, fmt.Errorf("gocelery: get result %s: %w", taskID, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrResultNotAvailable, taskID)
	}
	// Back at the head of the queue, for the next read.
	if err := d.Nack(false, true); err != nil {
		return nil, fmt.Errorf("gocelery: put back result %s: %w", taskID, err)
	}
	var rm ResultMessage
	if err := json.Unmarshal(d.Body, &rm); err != nil {
		return nil, fmt.Errorf("%w: result queue %s holds %.80q: %w", ErrUnsupportedMessage, q, d.Body, err)
	}
	if rm.Status == "" {
		return nil, fmt.Errorf("%w: result queue %s holds a message without status", ErrUnsupportedMessage, q)
	}
	return &rm, nil
}

// SetResult stores result for taskID as a persistent JSON message in the task's result queue
// and returns once the broker has confirmed it. result.ID is set to taskID (on a copy: the
// caller's value is not changed) and an empty Status is SUCCESS.
func (b *AMQPCeleryBackend) SetResult(taskID string, result *ResultMessage) error {
	if result == nil {
		return fmt.Errorf("%w: nil result for %s", ErrConfig, taskID)
	}
	rm := *result
	rm.ID = taskID
	if rm.Status == "" {
		rm.Status = "SUCCESS"
	}
	body, err := json.Marshal(&rm)
	if err != nil {
		return fmt.Errorf("gocelery: encode result %s: %w", taskID, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, err := b.channel()
	if err != nil {
		return err
	}
	q, err := resultQueue(ch, taskID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", q, false, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent,
		Timestamp:    time.Now(),
		ContentType:  "application/json",
		Body:         body,
	})
	if err != nil {
		return fmt.Errorf("gocelery: store result %s: %w", taskID, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("gocelery: store result %s: waiting for the confirm: %w", taskID, err)
	}
	if !ok {
		return fmt.Errorf("gocelery: store result %s: the broker did not confirm it", taskID)
	}
	return nil
}
