package celerycompat

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// A broker whose DB disagrees with the database its pool selects is refused: before, it ran
// tasks while celery inspect and revokes (published on "/<db>.celery.pidbox") missed it.
func TestBrokerRefusesDBMismatch(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(1)
	t.Cleanup(func() { pool.Close() })
	ctx := context.Background()

	bad, err := NewBroker(pool, BrokerConfig{DB: 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.DeclareQueue(ctx, "celery"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("DB 0 on a pool selecting 1: got %v, want ErrInvalidConfig", err)
	}
	if err := bad.DeclareQueue(ctx, "celery"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("second call: got %v, want the mismatch again", err)
	}

	good, err := NewBroker(pool, BrokerConfig{DB: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := good.DeclareQueue(ctx, "celery"); err != nil {
		t.Fatalf("matching DB: %v", err)
	}
}

func TestClientInfoDB(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"id=3 addr=127.0.0.1:5 laddr=x fd=8 name= age=0 idle=0 flags=N db=4 sub=0", 4, true},
		{"id=3 addr=127.0.0.1:5", 0, false},
		{"db=x", 0, false},
	} {
		got, ok := clientInfoDB(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("clientInfoDB(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// A worker on such a broker refuses to run rather than serving tasks deaf to control.
func TestWorkerRunRefusesDBMismatch(t *testing.T) {
	r := celerytest.StartRedis(t)
	pool := r.Pool(1)
	t.Cleanup(func() { pool.Close() })
	b, err := NewBroker(pool, BrokerConfig{DB: 0})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(b, WorkerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Run(ctx); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Run: %v, want ErrInvalidConfig", err)
	}
}
