package amqp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	"github.com/celerybridge/celerybridge/celerycompat"
)

// App is a celerycompat.App on RabbitMQ that owns its Transport: Celery's
// `Celery(broker='amqp://…', backend='redis://…')` or `backend='rpc://'`. Everything but Close is
// celerycompat.App's; Close closes the App, its rpc backend, then the connection NewApp opened.
// Safe for concurrent use.
type App struct {
	*celerycompat.App
	tr  *Transport
	rpc *RPCBackend // nil unless ResultBackend is rpc://

	closeOnce sync.Once
	closeErr  error
}

// NewApp connects to the RabbitMQ broker cfg.BrokerURL names (amqp:// or amqps://) and returns a
// celerycompat.App on it, with the rest of cfg as celerycompat.New reads it. ResultBackend is a
// Redis URL, or "rpc://" (also "rpc" and "rpc:///", as Celery spells it) for Celery's rpc result
// backend on the same connection: an RPCBackend with the app's ResultExpires, ResultExtended,
// PeerVersion, Timezone and Logger, whose reply queue is the reply_to of the tasks the app sends
// (see RPCBackend for what rpc:// can and cannot do). The transport gets an otherwise default Config, its codec
// from cfg.PeerVersion and its logger from cfg.Logger; for queue arguments, priorities or
// reconnection bounds, build the Transport with New and pass it as celerycompat.Config.Transport.
//
// It lives here rather than behind an amqp:// scheme in celerycompat.New because this package
// imports celerycompat, so celerycompat cannot import it. Unlike celerycompat.New, it connects at
// once: a wrong address is an error here (a Transport built with Config.Lazy and passed as
// celerycompat.Config.Transport starts while RabbitMQ is down instead). App.Control works over the
// RabbitMQ mailbox; App.Broker, the Redis *Broker, returns celerycompat.ErrUnsupportedTransport.
func NewApp(ctx context.Context, cfg celerycompat.Config) (*App, error) {
	u := cfg.BrokerURL
	if !strings.HasPrefix(u, "amqp://") && !strings.HasPrefix(u, "amqps://") {
		return nil, fmt.Errorf("%w: amqp: broker_url %q is not amqp:// or amqps://", celerycompat.ErrInvalidURL, redact(u))
	}
	if cfg.Transport != nil {
		return nil, fmt.Errorf("%w: amqp: NewApp makes the Transport; leave Config.Transport nil", celerycompat.ErrInvalidConfig)
	}
	tr, err := New(ctx, Config{URL: u, Codec: celerycompat.Codec{PeerVersion: cfg.PeerVersion}, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	var rpc *RPCBackend
	if isRPC(cfg.ResultBackend) {
		if cfg.Results != nil {
			return nil, errors.Join(fmt.Errorf("%w: amqp: ResultBackend rpc:// and Results are both set", celerycompat.ErrInvalidConfig), tr.Close())
		}
		rpc, err = NewRPCBackend(ctx, tr, RPCConfig{ResultExpires: cfg.ResultExpires, ResultExtended: cfg.ResultExtended,
			PeerVersion: cfg.PeerVersion, Timezone: cfg.Timezone, Logger: cfg.Logger})
		if err != nil {
			return nil, errors.Join(err, tr.Close())
		}
		cfg.ResultBackend, cfg.Results = "", rpc
	}
	cfg.BrokerURL, cfg.Transport = "", tr
	app, err := celerycompat.New(cfg)
	if err != nil {
		if rpc != nil {
			err = errors.Join(err, rpc.Close())
		}
		return nil, errors.Join(err, tr.Close())
	}
	return &App{App: app, tr: tr, rpc: rpc}, nil
}

// isRPC reports whether a result_backend URL names Celery's rpc backend.
func isRPC(u string) bool {
	return u == "rpc" || strings.HasPrefix(u, "rpc://")
}

// RPC returns the app's rpc result backend, nil unless its ResultBackend is rpc://.
func (a *App) RPC() *RPCBackend { return a.rpc }

// AMQP returns the app's RabbitMQ transport (for its dead-letter queue name, or to build more
// producers and workers on it).
func (a *App) AMQP() *Transport { return a.tr }

// Close closes the App (its result backend) and then the AMQP connection: stop the workers first.
// Only the first call does anything; later calls return its result.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		err := a.App.Close()
		if a.rpc != nil {
			err = errors.Join(err, a.rpc.Close())
		}
		a.closeErr = errors.Join(err, a.tr.Close())
	})
	return a.closeErr
}

// redact hides the password of a URL for error messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
