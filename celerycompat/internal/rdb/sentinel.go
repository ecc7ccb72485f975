package rdb

import (
	"context"
	"errors"
	"fmt"

	"github.com/gomodule/redigo/redis"
)

// ErrUnknownMaster is SentinelMaster's error for a master name the sentinel does not monitor.
var ErrUnknownMaster = errors.New("no master by that name")

// SentinelMaster asks a sentinel for the address ("host:port") of the master named name.
func SentinelMaster(ctx context.Context, c redis.Conn, name string) (string, error) {
	reply, err := redis.Strings(redis.DoContext(c, ctx, "SENTINEL", "get-master-addr-by-name", name))
	switch {
	case errors.Is(err, redis.ErrNil):
		return "", fmt.Errorf("%w %q", ErrUnknownMaster, name)
	case err != nil:
		return "", err
	case len(reply) != 2:
		return "", fmt.Errorf("get-master-addr-by-name answered %q", reply)
	}
	return reply[0] + ":" + reply[1], nil
}

// Role returns the first element of ROLE: "master", "slave" or "sentinel".
func Role(ctx context.Context, c redis.Conn) (string, error) {
	role, err := redis.Values(redis.DoContext(c, ctx, "ROLE"))
	if err == nil && len(role) == 0 {
		err = errors.New("empty ROLE reply")
	}
	if err != nil {
		return "", err
	}
	return redis.String(role[0], nil)
}
