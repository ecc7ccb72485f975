package celerycompat

import (
	"context"

	"github.com/gomodule/redigo/redis"
)

// Pool hands out Redis connections. *redis.Pool from redigo satisfies it. The caller owns the pool;
// nothing in this package closes it.
type Pool interface {
	GetContext(ctx context.Context) (redis.Conn, error)
}
