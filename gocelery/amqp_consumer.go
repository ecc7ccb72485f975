package gocelery

import (
	"context"
	"errors"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// idleWait is how long one Consumer.Next waits on an idle queue before it returns nothing, as
// celerycompat.Consumer's contract asks ("about a second or two").
const idleWait = time.Second

// idleTransport gives the worker consumers whose Next returns after idleWait when nothing
// arrives. celerycompat/amqp's Next waits until a message comes, so the worker's fetch loop
// kept every free slot while the queue was idle and a task held for its ETA (a countdown, or a
// retry) never got one to run in. Remove this once celerycompat/amqp returns on idle.
type idleTransport struct {
	celerycompat.Transport
}

// Consume wraps the transport's consumer (celerycompat.Transport).
func (t idleTransport) Consume(ctx context.Context, cfg celerycompat.ConsumerConfig) (celerycompat.Consumer, error) {
	c, err := t.Transport.Consume(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return idleConsumer{c}, nil
}

// idleConsumer is a Consumer whose Next returns (nil, nil) after idleWait with nothing.
type idleConsumer struct {
	celerycompat.Consumer
}

// Next waits at most idleWait for a delivery (celerycompat.Consumer).
func (c idleConsumer) Next(ctx context.Context, max int) ([]*celerycompat.Delivery, error) {
	wctx, cancel := context.WithTimeout(ctx, idleWait)
	defer cancel()
	ds, err := c.Consumer.Next(wctx, max)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return ds, nil
	}
	return ds, err
}
