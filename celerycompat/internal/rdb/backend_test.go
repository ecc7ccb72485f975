package rdb_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"
	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestStoreResults checks the pipelined store against a real redis-server: every result is
// written and published, an existing SUCCESS is kept (OK false), and a server that lost the
// script (SCRIPT FLUSH) still stores every item.
func TestStoreResults(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(0)
	ctx := context.Background()
	c := pool.Get()
	defer c.Close()

	sub := redis.PubSubConn{Conn: pool.Get()}
	defer sub.Close()
	if err := sub.PSubscribe("celery-task-meta-*"); err != nil {
		t.Fatal(err)
	}
	if _, ok := sub.Receive().(redis.Subscription); !ok {
		t.Fatal("no psubscribe confirmation")
	}

	r.Do(0, "SET", "celery-task-meta-kept", `{"status": "SUCCESS", "result": 1}`)
	for round, flush := range []bool{false, true} {
		if flush {
			r.Do(0, "SCRIPT", "FLUSH")
		}
		var items []rdb.Store
		for i := range 5 {
			items = append(items, rdb.Store{Key: fmt.Sprintf("celery-task-meta-%d-%d", round, i),
				Data: fmt.Appendf(nil, `{"status": "SUCCESS", "result": %d}`, i), TTL: 60})
		}
		items = append(items, rdb.Store{Key: "celery-task-meta-kept", Data: []byte(`{"status": "FAILURE"}`), TTL: 60})
		got := rdb.StoreResults(ctx, c, items)
		for i, it := range items {
			wantOK := it.Key != "celery-task-meta-kept"
			if got[i].Err != nil || got[i].OK != wantOK {
				t.Fatalf("round %d item %d: got %+v, want OK=%v", round, i, got[i], wantOK)
			}
			v, err := redis.String(c.Do("GET", it.Key))
			if wantOK && (err != nil || v != string(it.Data)) {
				t.Fatalf("round %d: %s = %q, %v; want %s", round, it.Key, v, err, it.Data)
			}
			if !wantOK && v != `{"status": "SUCCESS", "result": 1}` {
				t.Fatalf("the stored SUCCESS was overwritten: %s", v)
			}
			if ttl, _ := redis.Int(c.Do("TTL", it.Key)); wantOK && (ttl <= 0 || ttl > 60) {
				t.Fatalf("%s TTL %d, want 1..60", it.Key, ttl)
			}
		}
		for range 5 { // one publish per written result, in order
			m, ok := sub.Receive().(redis.Message)
			if !ok {
				t.Fatal("expected a published result")
			}
			if m.Channel == "celery-task-meta-kept" {
				t.Fatal("a kept SUCCESS was published over")
			}
		}
	}
}

// TestStoreResultsBrokenConnection: a connection that fails fails every item, none silently.
func TestStoreResultsBrokenConnection(t *testing.T) {
	r := celerytest.StartRedis(t)
	c := r.Pool(0).Get()
	c.Close() // closed: every send fails
	got := rdb.StoreResults(context.Background(), c, []rdb.Store{{Key: "a", Data: []byte("{}")}, {Key: "b", Data: []byte("{}")}})
	for i, g := range got {
		if g.Err == nil {
			t.Fatalf("item %d: no error on a closed connection", i)
		}
	}
}
