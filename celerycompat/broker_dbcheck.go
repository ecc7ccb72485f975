package celerycompat

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"
)

// dbCheck compares BrokerConfig.DB with the database the pool's connections actually select.
// The DB names the fanout channels ("/<db>.celeryev", "/<db>.celery.pidbox") and so decides
// whether celery inspect and revoke reach this worker; a pool on redis://…/1 with DB left at 0
// would run tasks but miss every broadcast. The check runs once, on the first connection, with
// CLIENT INFO (Redis 6.2+); a server that does not answer it is not checked.
type dbCheck struct {
	mu   sync.Mutex
	done bool
	err  error
}

// verify returns an ErrInvalidConfig error when c selects a database other than want.
func (d *dbCheck) verify(c redis.Conn, want int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return d.err
	}
	info, err := rdb.ClientInfo(c)
	if err != nil {
		if _, isReply := err.(redis.Error); isReply { // command unknown: nothing to compare
			d.done = true
			return nil
		}
		return fmt.Errorf("%w: check database: %w", ErrBroker, err)
	}
	d.done = true
	got, ok := clientInfoDB(info)
	if ok && got != want {
		d.err = fmt.Errorf("%w: BrokerConfig.DB is %d but the pool's connections use database %d; "+
			"set DB from the URL (RedisURL.DB) so remote control and revokes reach the worker",
			ErrInvalidConfig, want, got)
	}
	return d.err
}

// clientInfoDB extracts db=N from a CLIENT INFO line.
func clientInfoDB(info string) (int, bool) {
	for _, f := range strings.Fields(info) {
		if v, ok := strings.CutPrefix(f, "db="); ok {
			n, err := strconv.Atoi(v)
			return n, err == nil
		}
	}
	return 0, false
}

// checkDB takes one connection so the database check runs now. Worker.Run calls it to refuse a
// mismatch at start instead of retrying it as an outage; other errors are left to the loops.
func (b *Broker) checkDB(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	return c.Close()
}
