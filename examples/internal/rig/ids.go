package rig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/gomodule/redigo/redis"
)

// idKeyPrefix names the API's id mapping in the result database. Each submission writes two keys,
// one per id, with the same value, expiring with the results (Config.ResultExpires):
//
//	celerybridge.examples.task.<business id>  string  {"business_task_id": ..., "celery_task_id": ...}
//	celerybridge.examples.task.<celery id>    string  the same
//
// Both ids are fresh UUIDs, so the two key spaces never collide.
const idKeyPrefix = "celerybridge.examples.task."

// taskIDs is one submission's pair of ids.
type taskIDs struct {
	Business string `json:"business_task_id"`
	Celery   string `json:"celery_task_id"`
}

// idStore keeps the mapping. It is safe for concurrent use.
type idStore struct {
	pool celerycompat.Pool
	ttl  time.Duration
}

// errNoID is returned by lookup for an id with no mapping.
var errNoID = errors.New("rig: no such task id")

// drop deletes both keys of each pair.
func (s idStore) drop(ctx context.Context, all ...taskIDs) error {
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return fmt.Errorf("forget task ids: %w", err)
	}
	defer c.Close()
	keys := make([]any, 0, 2*len(all))
	for _, ids := range all {
		keys = append(keys, idKeyPrefix+ids.Business, idKeyPrefix+ids.Celery)
	}
	if _, err := redis.DoContext(c, ctx, "DEL", keys...); err != nil {
		return fmt.Errorf("forget %d task ids: %w", len(all), err)
	}
	return nil
}

// lookup finds the pair id belongs to, whichever of the two it is; errNoID when none.
func (s idStore) lookup(ctx context.Context, id string) (taskIDs, error) {
	c, err := s.pool.GetContext(ctx)
	if err != nil {
		return taskIDs{}, fmt.Errorf("look up task id: %w", err)
	}
	defer c.Close()
	raw, err := redis.Bytes(redis.DoContext(c, ctx, "GET", idKeyPrefix+id))
	if errors.Is(err, redis.ErrNil) {
		return taskIDs{}, errNoID
	}
	if err != nil {
		return taskIDs{}, fmt.Errorf("look up task id %s: %w", id, err)
	}
	var ids taskIDs
	if err := json.Unmarshal(raw, &ids); err != nil {
		return taskIDs{}, fmt.Errorf("look up task id %s: %w", id, err)
	}
	return ids, nil
}
