package celerycompat_test

import (
	"context"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

func TestZZGoLatency(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	w := s.newWorker(cc.WorkerConfig{})
	_ = w.Register("cap.echo", echoHandler)
	runWorker(t, w)
	time.Sleep(300 * time.Millisecond)
	var ms []float64
	for i := range 40 {
		t0 := time.Now()
		res, err := s.producer.Send(context.Background(), "cap.echo", nil, map[string]any{"i": i})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := res.Get(context.Background()); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
		time.Sleep(150 * time.Millisecond)
	}
	t.Logf("go producer -> go worker p50 %.2f p95 %.2f", percentile(ms, .5), percentile(ms, .95))
}
