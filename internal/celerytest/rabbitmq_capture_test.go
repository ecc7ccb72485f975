//go:build capture

package celerytest

import (
	"testing"
	"time"
)

// TestCaptureAMQPWire re-captures testdata/wire/amqp/<celery version>/ from both Python peers on
// a private node. It rewrites golden files, so it is built only with the "capture" tag, which
// testdata/python/capture_amqp_all.sh (make capture) passes; the ordinary test run never sees it.
func TestCaptureAMQPWire(t *testing.T) {
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
