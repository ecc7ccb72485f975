package gocelery_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/gocelery"
)

// A Go worker for tasks a Python client sends: add.apply_async((2, 3)) from Python runs the
// function below, and the Python client's get() returns 5.
func Example_worker() {
	pool := &redis.Pool{Dial: func() (redis.Conn, error) { return redis.DialURL("redis://localhost:6379/0") }}
	cli, err := gocelery.NewCeleryClient(gocelery.NewRedisBroker(pool), &gocelery.RedisCeleryBackend{Pool: pool}, 4)
	if err != nil {
		log.Fatal(err)
	}
	cli.Register("tasks.add", func(x, y int) int { return x + y })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli.StartWorkerWithContext(ctx) // returns at once
	cli.WaitForStopWorker()         // until ctx ends; running tasks finish first
}

// A Go client for a Python worker: the task is sent as Celery 4+ sends it (protocol 2), and
// Get wakes on the result's PUBLISH.
func Example_client() {
	pool := &redis.Pool{Dial: func() (redis.Conn, error) { return redis.DialURL("redis://localhost:6379/0") }}
	cli, err := gocelery.NewCeleryClient(gocelery.NewRedisBroker(pool), &gocelery.RedisCeleryBackend{Pool: pool}, 1)
	if err != nil {
		log.Fatal(err)
	}
	ar, err := cli.DelayKwargs("tasks.add", map[string]interface{}{"x": 2, "y": 3})
	if err != nil {
		log.Fatal(err)
	}
	res, err := ar.Get(10 * time.Second)
	if err != nil {
		log.Fatal(err) // a Python exception arrives here, wrapping gocelery.ErrTaskFailed
	}
	fmt.Println(res) // 5, a float64 as encoding/json decodes numbers
}
