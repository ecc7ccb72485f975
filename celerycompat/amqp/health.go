package amqp

import (
	"context"
	"errors"
	"fmt"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// errDial marks a failure to reach the broker at all (the TCP connection or the AMQP handshake),
// as opposed to the broker refusing something on a live connection.
var errDial = errors.New("amqp dial")

// Ping reports whether the broker answers: it connects when there is no live connection, then
// makes one round trip (opening and closing a channel), within ctx. A RabbitMQ that is down,
// unreachable or hung (a paused process keeps its TCP connections open) answers an error
// wrapping celerycompat.ErrBroker, or ctx's error, as soon as ctx ends. Health checks call it;
// concurrent calls during a hang share one round trip instead of piling up.
func (t *Transport) Ping(ctx context.Context) error {
	t.pingMu.Lock()
	p := t.ping
	if p == nil {
		p = &pingCall{done: make(chan struct{})}
		t.ping = p
		// The round trip runs without ctx: amqp091's channel calls take none. It ends when the
		// broker answers or the connection dies (heartbeat timeout), and only one runs at once.
		go t.runPing(p)
	}
	t.pingMu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("%w: amqp ping: %w", celerycompat.ErrBroker, ctx.Err())
	}
}

// pingCall is one round trip shared by the Pings waiting on it.
type pingCall struct {
	done chan struct{}
	err  error
}

func (t *Transport) runPing(p *pingCall) {
	defer func() {
		t.pingMu.Lock()
		t.ping = nil
		t.pingMu.Unlock()
		close(p.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), t.cfg.Heartbeat)
	defer cancel()
	conn, err := t.connection(ctx)
	if err != nil {
		p.err = err
		return
	}
	ch, err := conn.Channel()
	if err != nil {
		p.err = fmt.Errorf("%w: amqp ping: %w", celerycompat.ErrBroker, err)
		return
	}
	if err := ch.Close(); err != nil {
		p.err = fmt.Errorf("%w: amqp ping: %w", celerycompat.ErrBroker, err)
	}
}
