// A program written for github.com/gocelery/gocelery v1 on RabbitMQ (gocelery's AMQP broker and
// backend, a Go worker and a Go client), with the import paths changed: gocelery's, and
// github.com/streadway/amqp to github.com/rabbitmq/amqp091-go for the connection it builds
// itself. TestGoceleryAMQPProgramBuilds builds it as a module of its own and runs it against a
// real RabbitMQ. It reads the broker URL from AMQP_URL (default "amqp://", gocelery's address).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"reflect"
	"time"

	"github.com/celerybridge/celerybridge/gocelery"
	"github.com/rabbitmq/amqp091-go"
)

// multiplyTask takes keyword arguments, asserting float64 as gocelery's documentation does.
type multiplyTask struct {
	x, y int
}

func (m *multiplyTask) ParseKwargs(kwargs map[string]interface{}) error {
	x, ok := kwargs["x"].(float64)
	if !ok {
		return fmt.Errorf("kwarg x missing or not a number")
	}
	y, ok := kwargs["y"].(float64)
	if !ok {
		return fmt.Errorf("kwarg y missing or not a number")
	}
	m.x, m.y = int(x), int(y)
	return nil
}

func (m *multiplyTask) RunTask() (interface{}, error) {
	return m.x * m.y, nil
}

func main() {
	url := os.Getenv("AMQP_URL")
	if url == "" {
		url = "amqp://"
	}

	cli, err := gocelery.NewCeleryClient(
		gocelery.NewAMQPCeleryBroker(url),
		gocelery.NewAMQPCeleryBackend(url),
		5,
	)
	if err != nil {
		log.Fatal(err)
	}

	add := func(a, b int) int {
		return a + b
	}
	cli.Register("worker.add", add)
	cli.Register("worker.multiply", &multiplyTask{})

	ctx, cancel := context.WithCancel(context.Background())
	cli.StartWorkerWithContext(ctx)

	asyncResult, err := cli.Delay("worker.add", 5456, 2878)
	if err != nil {
		log.Fatal(err)
	}
	res, err := asyncResult.Get(10 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("add: %+v of type %+v\n", res, reflect.TypeOf(res))

	// A backend on a connection the program dials itself.
	conn, err := amqp091.Dial(url)
	if err != nil {
		log.Fatal(err)
	}
	channel, err := conn.Channel()
	if err != nil {
		log.Fatal(err)
	}
	var backend gocelery.CeleryBackend = gocelery.NewAMQPCeleryBackendByConnAndChannel(conn, channel)
	asyncResult, err = cli.DelayKwargs("worker.multiply", map[string]interface{}{"x": 6, "y": 7})
	if err != nil {
		log.Fatal(err)
	}
	res, err = asyncResult.Get(10 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	ready, _ := asyncResult.Ready()
	stored, err := backend.GetResult(asyncResult.TaskID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("multiply: %+v ready %v stored %v\n", res, ready, stored.Result)

	cancel()
	cli.WaitForStopWorker()

	// The rest of gocelery's AMQP surface, so the build checks every name and signature.
	var newConn func(string) (*amqp091.Connection, *amqp091.Channel) = gocelery.NewAMQPConnection
	_ = newConn
	broker := gocelery.NewAMQPCeleryBrokerByConnAndChannel(conn, channel)
	var _ *amqp091.Channel = broker.Channel
	var _ *amqp091.Connection = broker.Connection
	var _ int = broker.Rate
	broker.Exchange = gocelery.NewAMQPExchange("celery")
	broker.Queue = gocelery.NewAMQPQueue("celery")
	var _ string = broker.Exchange.Type
	var _ bool = broker.Exchange.Durable && !broker.Exchange.AutoDelete && broker.Queue.Durable && !broker.Queue.AutoDelete
	if err := broker.CreateExchange(); err != nil {
		log.Fatal(err)
	}
	if err := broker.CreateQueue(); err != nil {
		log.Fatal(err)
	}
	var _ func() error = broker.StartConsumingChannel
	var _ func(*gocelery.CeleryMessage) error = broker.SendCeleryMessage
	var _ func() (*gocelery.TaskMessage, error) = broker.GetTaskMessage
	b := gocelery.NewAMQPCeleryBackend(url)
	var _ string = b.Host
	b.Reconnect()
	var _ func(string, *gocelery.ResultMessage) error = b.SetResult
	conn.Close()
	fmt.Println("done")
}
