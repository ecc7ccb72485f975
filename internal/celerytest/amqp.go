package celerytest

import (
	"testing"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// DialChannel opens an AMQP channel to url on a connection of its own, closed when the test
// ends: for tests and benchmarks that speak AMQP directly, as a foreign client would.
func DialChannel(tb testing.TB, url string) *amqp091.Channel {
	tb.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatal(err)
	}
	return ch
}

// Channel is DialChannel to the vhost.
func (v *VHost) Channel(tb testing.TB) *amqp091.Channel {
	tb.Helper()
	return DialChannel(tb, v.URL())
}
