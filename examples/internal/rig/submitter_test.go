package rig

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/gomodule/redigo/redis"
)

// TestSubmitBatchesConcurrentRequests: 300 submissions at once all succeed, each with its
// mapping and its message, in fewer mapping writes (one script call each) than submissions.
func TestSubmitBatchesConcurrentRequests(t *testing.T) {
	const n = 300
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	api := newTestAPI(t, cfg, testDeps(t, cfg))
	var wg sync.WaitGroup
	got := make([]SubmitResponse, n)
	for i := range n {
		wg.Go(func() { got[i] = submit(t, api, fmt.Sprintf(`{"i": %d}`, i)) })
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, s := range got {
		if s.Code != http.StatusOK || seen[s.CeleryTaskID] {
			t.Fatalf("answer %+v (duplicate: %v)", s, seen[s.CeleryTaskID])
		}
		seen[s.CeleryTaskID] = true
		for _, id := range []string{s.BusinessTaskID, s.CeleryTaskID} {
			if v, err := redis.String(r.do(0, "GET", idKeyPrefix+id)); err != nil || !strings.Contains(v, s.CeleryTaskID) {
				t.Fatalf("mapping of %s: %q, %v", id, v, err)
			}
		}
	}
	if q := queued(t, r); q != n {
		t.Fatalf("%d messages queued, want %d", q, n)
	}
	info, _ := redis.String(r.do(0, "INFO", "commandstats"))
	var execs int
	for _, line := range strings.Split(info, "\r\n") {
		for _, cmd := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
			if rest, ok := strings.CutPrefix(line, cmd); ok {
				var k int
				fmt.Sscanf(rest, "%d", &k)
				execs += k
			}
		}
	}
	t.Logf("%d submissions in %d script calls", n, execs)
	if execs == 0 || execs >= n {
		t.Errorf("%d script calls for %d concurrent submissions: not batched", execs, n)
	}
}

// TestSubmitterItemFailure: in one batch, the submission whose publish fails gets the error and
// its mapping is taken back; the others are published with their mappings.
func TestSubmitterItemFailure(t *testing.T) {
	r := startRedis(t)
	cfg := testConfig(t, r, nil)
	deps := testDeps(t, cfg)
	broker, err := celerycompat.NewBroker(deps.Broker, celerycompat.BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused by a before_task_publish hook")
	producer, err := celerycompat.NewProducer(broker, celerycompat.ProducerConfig{
		BeforeTaskPublish: []celerycompat.PublishHook{func(_ context.Context, m *celerycompat.Message) error {
			if m.Kwargs["task_id"] == "biz-bad" {
				return refused
			}
			return nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	s := newSubmitter(idStore{pool: deps.Broker, ttl: cfg.ResultExpires}, producer, cfg.RedisTimeout)
	// Hold the flush slots so that all three wait and go out as one batch.
	for range submitFlushers {
		s.sem <- struct{}{}
	}
	ids := []taskIDs{{"biz-a", "cel-a"}, {"biz-bad", "cel-bad"}, {"biz-c", "cel-c"}}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, p := range ids {
		wg.Go(func() { errs[i] = s.submit(context.Background(), p, map[string]any{"task_id": p.Business}) })
	}
	for {
		s.mu.Lock()
		n := len(s.pending)
		s.mu.Unlock()
		if n == len(ids) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for range submitFlushers {
		<-s.sem
	}
	wg.Wait()
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], refused) {
		t.Fatalf("errors %v; want only the second to fail", errs)
	}
	for i, p := range ids {
		for _, id := range []string{p.Business, p.Celery} {
			n, _ := redis.Int(r.do(0, "EXISTS", idKeyPrefix+id))
			if want := map[bool]int{true: 0, false: 1}[i == 1]; n != want {
				t.Errorf("mapping %s exists: %d, want %d", id, n, want)
			}
		}
	}
	if q := queued(t, r); q != 2 {
		t.Errorf("%d messages queued, want 2", q)
	}
}
