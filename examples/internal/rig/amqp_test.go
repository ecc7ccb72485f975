package rig

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	celerytest.StopSharedRabbitMQ()
	os.Exit(code)
}

// On RabbitMQ the API behaves as on Redis when its broker is away: it starts while RabbitMQ is
// down, /healthz says so within a second (down or hung), a submission answers 503 naming
// RabbitMQ rather than Redis, and once RabbitMQ is reachable both recover by themselves.
func TestAPIWhileRabbitMQDown(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: needs rabbitmq-server")
	}
	r := startRedis(t)
	v := celerytest.SharedRabbitMQ(t).VHost(t)
	g, u := celerytest.GateURL(t, v.URL())
	cfg := testConfig(t, r, env{"CELERY_BROKER_URL": u, "REDIS_TIMEOUT": "0.5"})
	h := newTestAPI(t, cfg, testDeps(t, cfg)) // the broker is down: starting must not need it

	unhealthy := func(state string) {
		t.Helper()
		start := time.Now()
		code, out := call(t, h, http.MethodGet, "/healthz", "")
		if d := time.Since(start); code != http.StatusServiceUnavailable || d > time.Second {
			t.Errorf("GET /healthz, RabbitMQ %s: %d after %v, want 503 within 1 s", state, code, d)
		}
		if got := decode[ErrorResponse](t, out); !strings.Contains(got.Message, msgRabbitDown) {
			t.Errorf("GET /healthz, RabbitMQ %s: %q, want it to name RabbitMQ", state, got.Message)
		}
	}
	unhealthy("down")
	code, out := call(t, h, http.MethodPost, "/submit-task", `{"a": 1}`)
	if got := decode[ErrorResponse](t, out); code != http.StatusServiceUnavailable || got.Message != MsgSubmitFailed+msgRabbitDown {
		t.Errorf("POST, RabbitMQ down: %d %q, want 503 %q", code, got.Message, MsgSubmitFailed+msgRabbitDown)
	}

	g.Hang()
	unhealthy("hung")
	g.Drop() // ends the hung handshake
	g.Forward()

	deadline := time.Now().Add(15 * time.Second)
	for {
		code, out := call(t, h, http.MethodGet, "/healthz", "")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /healthz with RabbitMQ back: %d %s", code, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	res := submit(t, h, `{"a": 2}`)
	if res.CeleryTaskID == "" {
		t.Fatalf("POST with RabbitMQ back: %+v", res)
	}
}
