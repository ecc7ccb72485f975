package celerycompat_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// BenchmarkSentinelPublish measures what BrokerConfig.WaitReplicas costs a publish through a
// sentinel:// pool (master and two replicas on loopback): one Send per op, serial and with 16
// concurrent senders.
//
//	go test -run '^$' -bench SentinelPublish -benchtime 3000x ./celerycompat/
func BenchmarkSentinelPublish(b *testing.B) {
	s := celerytest.StartSentinelsN(b, 2)
	u, err := cc.ParseRedisURL(s.URL(0))
	if err != nil {
		b.Fatal(err)
	}
	u.MasterName = celerytest.SentinelMaster
	for _, wait := range []int{0, 1, 2} {
		for _, par := range []int{1, 16} {
			b.Run(fmt.Sprintf("wait=%d/senders=%d", wait, par), func(b *testing.B) {
				pool := u.NewPool(32)
				defer pool.Close()
				broker, err := cc.NewBroker(pool, cc.BrokerConfig{WaitReplicas: wait, WaitTimeout: time.Second})
				if err != nil {
					b.Fatal(err)
				}
				p, err := cc.NewProducer(broker, cc.ProducerConfig{})
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				b.SetParallelism(max(1, par/runtime.GOMAXPROCS(0)))
				b.ResetTimer()
				if par == 1 {
					for range b.N {
						if _, err := p.Send(ctx, "bench.noop", []any{1}, nil); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := p.Send(ctx, "bench.noop", []any{1}, nil); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				b.StopTimer()
				_, _ = pool.Get().Do("FLUSHDB")
			})
		}
	}
}
