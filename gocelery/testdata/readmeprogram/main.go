// A program written for github.com/gocelery/gocelery v1, in the shape of its README (a Go worker
// and a Go client), with one change: the import path. TestGocelerySourceProgramBuilds builds it
// as a module of its own and runs it against a real Redis. It reads the Redis URL from
// REDIS_URL (default "redis://", gocelery's README address) so the test can point it anywhere.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"reflect"
	"time"

	"github.com/celerybridge/celerybridge/gocelery"
	"github.com/gomodule/redigo/redis"
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
	url := os.Getenv("REDIS_URL")
	if url == "" {
		url = "redis://"
	}
	pool := &redis.Pool{
		MaxIdle:     3,
		IdleTimeout: 240 * time.Second,
		Dial: func() (redis.Conn, error) {
			return redis.DialURL(url)
		},
	}

	cli, err := gocelery.NewCeleryClient(
		gocelery.NewRedisBroker(pool),
		&gocelery.RedisCeleryBackend{Pool: pool},
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

	asyncResult, err = cli.DelayKwargs("worker.multiply", map[string]interface{}{"x": 6, "y": 7})
	if err != nil {
		log.Fatal(err)
	}
	res, err = asyncResult.Get(10 * time.Second)
	if err != nil {
		log.Fatal(err)
	}
	ready, _ := asyncResult.Ready()
	fmt.Printf("multiply: %+v ready %v\n", res, ready)

	cancel()
	cli.WaitForStopWorker()

	// The rest of gocelery's surface, so the build checks every name and signature.
	var broker gocelery.CeleryBroker = gocelery.NewRedisCeleryBroker(url)
	var backend gocelery.CeleryBackend = gocelery.NewRedisCeleryBackend(url)
	worker := gocelery.NewCeleryWorker(broker, backend, 2)
	worker.Register("noop", func() {})
	_ = worker.GetTask("noop")
	_ = worker.GetNumWorkers()
	var runTask func(*gocelery.TaskMessage) (*gocelery.ResultMessage, error) = worker.RunTask
	_ = runTask
	worker.StartWorker()
	worker.StopWorker()
	worker.StopWait()
	var _ func() (interface{}, error) = asyncResult.AsyncGet
	var _ func(string) (*gocelery.TaskMessage, error) = gocelery.DecodeTaskMessage
	var _ func(*reflect.Value) interface{} = gocelery.GetRealValue
	var _ func(string) *redis.Pool = gocelery.NewRedisPool
	var _ *redis.Pool = gocelery.NewRedisBackend(pool).Pool
	var _ string = gocelery.NewRedisBroker(pool).QueueName
	msg := &gocelery.CeleryMessage{Properties: gocelery.CeleryProperties{DeliveryInfo: gocelery.CeleryDeliveryInfo{RoutingKey: "celery"}}}
	_ = msg.GetTaskMessage()
	eta := time.Now().Format(time.RFC3339)
	expires := time.Now().Add(time.Hour)
	tm := &gocelery.TaskMessage{ID: "x", Task: "noop", Args: []interface{}{}, Kwargs: map[string]interface{}{},
		Retries: 0, ETA: &eta, Expires: &expires}
	rm := &gocelery.ResultMessage{ID: "x", Status: "SUCCESS", Traceback: nil, Result: 1, Children: nil}
	_ = rm
	msg.Headers = map[string]interface{}{}
	msg.Properties.BodyEncoding, msg.Properties.CorrelationID, msg.Properties.ReplyTo = "base64", "x", "y"
	msg.Properties.DeliveryMode, msg.Properties.DeliveryTag = 2, "z"
	msg.Properties.DeliveryInfo.Priority, msg.Properties.DeliveryInfo.Exchange = 0, ""
	msg.Body, msg.ContentType, msg.ContentEncoding = "", "application/json", "utf-8"
	if _, err := tm.Encode(); err != nil {
		log.Fatal(err)
	}
	var _ gocelery.CeleryTask = &multiplyTask{}
	cli.StartWorker()
	cli.StopWorker()
	fmt.Println("done")
}
