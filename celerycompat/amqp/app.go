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
// `Celery(broker='amqp://…', backend='redis://…')`. Everything but Close is celerycompat.App's;
// Close closes the App, then the connection NewApp opened. Safe for concurrent use.
type App struct {
	*celerycompat.App
	tr *Transport

	closeOnce sync.Once
	closeErr  error
}

// NewApp connects to the RabbitMQ broker cfg.BrokerURL names (amqp:// or amqps://) and returns a
// celerycompat.App on it, with the rest of cfg as celerycompat.New reads it (ResultBackend, a
// Redis URL, is the result backend). The transport gets an otherwise default Config, its codec
// from cfg.PeerVersion and its logger from cfg.Logger; for queue arguments, priorities or
// reconnection bounds, build the Transport with New and pass it as celerycompat.Config.Transport.
//
// It lives here rather than behind an amqp:// scheme in celerycompat.New because this package
// imports celerycompat, so celerycompat cannot import it. Unlike celerycompat.New, it connects at
// once (AMQP has no lazy pool): a wrong address is an error here. App.Control works over the
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
	cfg.BrokerURL, cfg.Transport = "", tr
	app, err := celerycompat.New(cfg)
	if err != nil {
		return nil, errors.Join(err, tr.Close())
	}
	return &App{App: app, tr: tr}, nil
}

// AMQP returns the app's RabbitMQ transport (for its dead-letter queue name, or to build more
// producers and workers on it).
func (a *App) AMQP() *Transport { return a.tr }

// Close closes the App (its result backend) and then the AMQP connection: stop the workers first.
// Only the first call does anything; later calls return its result.
func (a *App) Close() error {
	a.closeOnce.Do(func() {
		a.closeErr = errors.Join(a.App.Close(), a.tr.Close())
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
