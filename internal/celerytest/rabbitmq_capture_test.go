package celerytest

import (
	"os"
	"testing"
	"time"
)

// TestCaptureAMQPWire re-captures testdata/wire/amqp/<celery version>/ from both Python peers on
// a private node (testdata/python/capture_amqp_all.sh runs it). It runs only when
// CELERYBRIDGE_CAPTURE_AMQP=1: it rewrites golden files.
func TestCaptureAMQPWire(t *testing.T) {
	if os.Getenv("CELERYBRIDGE_CAPTURE_AMQP") != "1" {
		t.Skip("set CELERYBRIDGE_CAPTURE_AMQP=1 (or run testdata/python/capture_amqp_all.sh) to re-capture the AMQP wire vectors")
	}
	r := SharedRabbitMQ(t)
	ctl, err := r.CtlScript()
	if err != nil {
		t.Fatal(err)
	}
	for _, peer := range Peers {
		t.Run(string(peer), func(t *testing.T) {
			begin := time.Now()
			out := RunPython(t, peer, nil, 5*time.Minute, "capture_amqp.py", "--url", r.BaseURL(), "--ctl", ctl)
			t.Logf("%s in %v", out, time.Since(begin))
		})
	}
}
