// Package rdb is celerycompat's Redis layer: every key name (keys.go), every Lua script
// (scripts.go, each with its KEYS and ARGV), and the commands, pipelines and pub/sub
// subscriptions of the broker (broker.go), the result backend and chords (backend.go), remote
// control and events (fanout.go) and Sentinel discovery (sentinel.go). Each function runs its commands on a connection the caller
// took from its pool and returns the server's errors unwrapped: the callers in celerycompat
// wrap them in ErrBroker or ErrBackend and own connection handling (pools, the database check,
// Sentinel failover).
//
// What the commands mean is kombu's and Celery's, not ours: the lists, the un-acked hash and
// index, the binding sets and the result keys are the ones Python workers read and write beside
// ours, so a change here is a change of the wire format (see /docs and testdata/wire).
//
// It imports only redigo. celerycompat's TestRedisCommandsOnlyInRDB fails when a command is sent
// from anywhere else.
package rdb
