package celerycompat_test

import (
	"context"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// TestDeclareQueueWritesBothBindings: DeclareQueue returns (it once waited for a reply that never
// came) and writes kombu's binding and kombu 5.7's permanent binding.
func TestDeclareQueueWritesBothBindings(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.broker.DeclareQueue(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"_kombu.binding.other", "_kombu.binding_permanent.other"} {
		members, err := redis.Strings(s.r.Do(0, "SMEMBERS", key), nil)
		if err != nil || len(members) != 1 || members[0] != "other\x06\x16\x06\x16other" {
			t.Fatalf("%s = %q (%v)", key, members, err)
		}
	}
}
