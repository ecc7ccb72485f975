package celerycompat

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat/internal/rdb"

	"github.com/gomodule/redigo/redis"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// DefaultResultExpires is Celery's result_expires default: results live one day (SETEX 86400).
const DefaultResultExpires = 24 * time.Hour

// BackendConfig configures a Backend. The zero value matches a default Celery 5.2 app: no key
// prefix, results kept 24 h, naive UTC date_done, no extended fields.
type BackendConfig struct {
	// Keys builds the result keys; only ResultPrefix (Celery >= 5.3
	// result_backend_transport_options global_keyprefix) matters here.
	Keys Keys
	// ResultExpires is Celery's result_expires: zero means 24 h (SETEX 86400), negative means
	// never (plain SET). Positive values are truncated to whole seconds and must be >= 1 s.
	ResultExpires time.Duration
	// PeerVersion is the oldest Celery that reads our results. It picks the date_done format
	// (naive UTC before 5.4, UTC "+00:00" in 5.4, the Timezone offset from 5.5). Zero means 5.2.
	PeerVersion Version
	// Timezone is the app timezone used for date_done when PeerVersion >= 5.5; nil means UTC.
	Timezone *time.Location
	// ResultExtended writes name, args, kwargs, worker, retries and queue like Celery's
	// result_extended=True.
	ResultExtended bool
	// Codec encodes result values (JSON markers when Codec.PeerVersion >= 5.3) and decodes them.
	// A zero Codec.PeerVersion takes PeerVersion.
	Codec Codec
	// Logger receives diagnostics (pub/sub reconnects); nil is silent.
	Logger *slog.Logger
	// Now is the clock for date_done; nil means time.Now.
	Now func() time.Time
}

// Backend is Celery's Redis result backend: it stores task states the way a Python worker does
// (including the PUBLISH that wakes Python's AsyncResult.get()), reads what Python stored, waits
// for results over one shared pub/sub connection and keeps chord bookkeeping.
//
// A Backend is safe for concurrent use. The first AsyncResult wait starts one goroutine that
// keeps one connection from the pool for pub/sub (size a MaxActive-limited pool for it) until
// Close. Close stops that goroutine; it never closes the pool, which the caller owns.
type Backend struct {
	pool     Pool
	cfg      BackendConfig
	keys     Keys
	codec    Codec
	log      *slog.Logger
	now      func() time.Time
	ttl      int // result_expires in seconds; 0 = no expiry
	consumer *resultConsumer
}

// NewBackend returns a result backend on pool, which the caller owns.
func NewBackend(pool Pool, cfg BackendConfig) (*Backend, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalidConfig)
	}
	if cfg.Codec.PeerVersion.IsZero() {
		cfg.Codec.PeerVersion = cfg.PeerVersion
	}
	b := &Backend{pool: pool, cfg: cfg, keys: cfg.Keys, codec: cfg.Codec, log: cfg.Logger, now: cfg.Now}
	switch {
	case cfg.ResultExpires == 0:
		b.ttl = int(DefaultResultExpires / time.Second)
	case cfg.ResultExpires < 0:
		b.ttl = 0
	case cfg.ResultExpires < time.Second:
		return nil, fmt.Errorf("%w: result_expires %v is under one second", ErrInvalidConfig, cfg.ResultExpires)
	default:
		b.ttl = int(cfg.ResultExpires / time.Second)
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.consumer = newResultConsumer(pool, b.log)
	return b, nil
}

// Close stops the pub/sub consumer: waiting Get calls return an error wrapping ErrBackend. Reads
// and writes keep working. Close is idempotent.
func (b *Backend) Close() error {
	b.consumer.close()
	return nil
}

// Keys returns the key builder the backend uses.
func (b *Backend) Keys() Keys { return b.keys }

// ResultMeta is protocol.ResultMeta: one task's stored result, decoded.
type ResultMeta = protocol.ResultMeta

func (b *Backend) conn(ctx context.Context) (redis.Conn, error) {
	c, err := b.pool.GetContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: get connection: %w", errBackendRedis, err)
	}
	return c, nil
}

// StoreResult stores meta the way Celery's _store_result does: unless the key already holds
// SUCCESS (which is never overwritten; stored is then false), it writes the JSON with SETEX
// result_expires and PUBLISHes the same JSON on the key's channel, so Python's waiting
// AsyncResult.get() wakes at once. The check and the write are one atomic Lua script.
func (b *Backend) StoreResult(ctx context.Context, meta ResultMeta) (stored bool, err error) {
	if meta.TaskID == "" {
		return false, fmt.Errorf("%w: store result: empty task id", ErrInvalidConfig)
	}
	if meta.Status == "" {
		return false, fmt.Errorf("%w: store result of task %s: empty status", ErrInvalidConfig, meta.TaskID)
	}
	data, err := b.encodeMeta(meta)
	if err != nil {
		return false, fmt.Errorf("celerycompat: store result of task %s: %w", meta.TaskID, err)
	}
	c, err := b.conn(ctx)
	if err != nil {
		return false, err
	}
	defer c.Close()
	stored, err = rdb.StoreResult(ctx, c, b.keys.TaskMeta(meta.TaskID), data, b.ttl)
	if err != nil {
		return false, fmt.Errorf("%w: store result of task %s: %w", errBackendRedis, meta.TaskID, err)
	}
	if !stored {
		b.log.DebugContext(ctx, "kept existing SUCCESS result", "task_id", meta.TaskID, "status", string(meta.Status))
	}
	return stored, nil
}

// format is how this backend writes and reads stored results.
func (b *Backend) format() protocol.ResultFormat {
	return protocol.ResultFormat{Codec: b.codec, PeerVersion: b.cfg.PeerVersion, ResultExtended: b.cfg.ResultExtended, Timezone: b.cfg.Timezone}
}

// encodeMeta renders meta as Celery writes it (see protocol.ResultFormat.EncodeMeta).
func (b *Backend) encodeMeta(m ResultMeta) ([]byte, error) { return b.format().EncodeMeta(m, b.now()) }

// encodeResult renders a result value, an error as Celery's exception dict.
func (b *Backend) encodeResult(v any) ([]byte, error) { return b.format().EncodeResult(v) }

// decodeMeta decodes a stored or published result value of task id.
func (b *Backend) decodeMeta(id string, raw []byte) (*ResultMeta, error) {
	return b.format().DecodeMeta(id, raw)
}

// GetMeta reads the stored result of task id. A missing key gives Status PENDING (Celery never
// stores PENDING). Values written by Celery 5.2 through 5.7 decode, including kombu's JSON
// markers and every date_done format; an undecodable field gives an error wrapping a
// *DecodeError that names it.
func (b *Backend) GetMeta(ctx context.Context, id string) (*ResultMeta, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	raw, err := rdb.Get(ctx, c, b.keys.TaskMeta(id))
	if err != nil {
		return nil, fmt.Errorf("%w: get result of task %s: %w", errBackendRedis, id, err)
	}
	if raw == nil {
		return &ResultMeta{TaskID: id, Status: StatePending}, nil
	}
	return b.decodeMeta(id, raw)
}

// Forget deletes the stored result of task id (AsyncResult.forget).
func (b *Backend) Forget(ctx context.Context, id string) error {
	c, err := b.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := rdb.Del(ctx, c, b.keys.TaskMeta(id)); err != nil {
		return fmt.Errorf("%w: forget task %s: %w", errBackendRedis, id, err)
	}
	return nil
}
