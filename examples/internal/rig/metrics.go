package rig

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/labstack/echo/v4"
)

// Metric names of GET /metrics (Prometheus text format 0.0.4, written by hand: six series do not
// justify the client library and its dependencies).
const (
	MetricQueueLength = "celerybridge_queue_length"      // gauge {queue, priority}
	MetricSubmissions = "celerybridge_submissions_total" // counter {outcome="ok"|"failed"|"rejected"}
	// MetricOutbox's state="dead" counts callbacks the dispatcher gave up on: list them with GET
	// /callbacks/dead, send them again with POST /callbacks/dead/replay.
	MetricOutbox  = "celerybridge_callback_outbox" // gauge {state="pending"|"ready"|"in_flight"|"dead"}
	MetricRedisUp = "celerybridge_redis_up"        // gauge: 1 when this scrape reached Redis
)

// healthz answers 200 {"status": "ok"} when every Redis the API uses answers PING, and RabbitMQ
// (when it is the broker) a round trip, within healthTimeout, else 503 (a hung Redis included). A stale connection from before a Redis
// restart is retried, not reported.
func (a *api) healthz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), healthTimeout)
	defer cancel()
	for _, p := range a.pools {
		if err := ping(ctx, p); err != nil {
			a.log.Warn("healthz: redis", "err", err)
			return echo.NewHTTPError(http.StatusServiceUnavailable, "unhealthy: "+msgRedisDown)
		}
	}
	if a.pinger != nil {
		if err := a.pinger.Ping(ctx); err != nil {
			a.log.Warn("healthz: rabbitmq", "err", err)
			return echo.NewHTTPError(http.StatusServiceUnavailable, "unhealthy: "+msgRabbitDown)
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// metrics writes the exposition. The counters are always there; the Redis gauges only when Redis
// answered, with celerybridge_redis_up saying whether it did. Submissions count outcomes of POST
// /submit-task: ok (queued), failed (Redis), rejected (400/413).
func (a *api) metrics(c echo.Context) error {
	ctx, cancel := redisCtx(c, a.cfg)
	defer cancel()
	var b bytes.Buffer
	up := 1

	header(&b, MetricQueueLength, "gauge", "Messages waiting in a Celery queue, per priority step.")
	var lens map[int]int
	var err error
	if a.broker != nil { // on RabbitMQ queue depths are the broker's own metrics (list_queues)
		lens, err = a.broker.QueueLengths(ctx, Queue)
	}
	if err != nil {
		up = 0
		a.log.Warn("metrics: queue lengths", "queue", Queue, "err", err)
	} else {
		steps := make([]int, 0, len(lens))
		for s := range lens {
			steps = append(steps, s)
		}
		slices.Sort(steps)
		for _, s := range steps {
			fmt.Fprintf(&b, "%s{queue=%q,priority=\"%d\"} %d\n", MetricQueueLength, Queue, s, lens[s])
		}
	}

	header(&b, MetricSubmissions, "counter", "Task submissions to POST /submit-task by outcome.")
	for _, o := range []struct {
		name string
		n    int64
	}{{"ok", a.submitOK.Load()}, {"failed", a.submitFailed.Load()}, {"rejected", a.submitRejected.Load()}} {
		fmt.Fprintf(&b, "%s{outcome=%q} %d\n", MetricSubmissions, o.name, o.n)
	}

	header(&b, MetricOutbox, "gauge", "Callback outbox events by state (ready is the due part of pending).")
	if st, err := a.outbox.Stats(ctx); err != nil {
		up = 0
		a.log.Warn("metrics: outbox stats", "err", err)
	} else {
		for _, s := range []struct {
			name string
			n    int64
		}{{"pending", st.Pending}, {"ready", st.Ready}, {"in_flight", st.InFlight}, {"dead", st.Dead}} {
			fmt.Fprintf(&b, "%s{state=%q} %d\n", MetricOutbox, s.name, s.n)
		}
	}

	header(&b, MetricRedisUp, "gauge", "Whether this scrape reached Redis.")
	fmt.Fprintf(&b, "%s %d\n", MetricRedisUp, up)
	return c.Blob(http.StatusOK, "text/plain; version=0.0.4; charset=utf-8", b.Bytes())
}

func header(b *bytes.Buffer, name, typ, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}
