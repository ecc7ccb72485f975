package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/pgstore"
	"github.com/celerybridge/celerybridge/callback/sqlitestore"
	"github.com/labstack/echo/v4"
)

// CallbackStats is the answer to GET /callbacks/stats.
type CallbackStats struct {
	Received   int64            `json:"received"`   // accepted requests, duplicates included
	Unique     int64            `json:"unique"`     // callbacks stored
	Duplicates int64            `json:"duplicates"` // repeated event ids, suppressed
	ByStatus   map[string]int64 `json:"by_status"`  // stored callbacks per status
}

// TaskCallbacks is the answer to GET /callbacks/{id}.
type TaskCallbacks struct {
	Code      int                 `json:"code"`
	TaskID    string              `json:"task_id"`
	Callbacks []callback.Callback `json:"callbacks"` // oldest first
}

// NewReceiver returns the callback receiver service: POST /receive-task-result (callback.Handler:
// signature check when cfg.CallbackSecret is set, bodies up to cfg.MaxBodyBytes read as they
// arrive, at most cfg.MaxConcurrent at once, dedupe by event id), GET /callbacks/{id} (the id
// percent-decoded; it may contain '/'), GET /callbacks/stats and GET /healthz, with the HTTP
// limits of cfg. Callbacks are kept in store, which the caller owns (OpenStore opens the one cfg
// names). Each new callback is logged at info level, as the original printed it.
func NewReceiver(cfg Config, store callback.Store, logger *slog.Logger) (*echo.Echo, error) {
	if store == nil {
		return nil, errors.New("rig: NewReceiver: nil store")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The log line comes from the store's answer rather than from an OnCallback hook: a hook
	// costs a look-up query per callback to know whether the event is new, which the insert
	// tells anyway.
	h, err := callback.NewHandler(callback.HandlerConfig{
		Store:         loggingStore{Store: store, log: logger},
		Secret:        secret(cfg),
		MaxBodyBytes:  cfg.MaxBodyBytes,
		MaxConcurrent: cfg.MaxConcurrent,
		QueueTimeout:  cfg.HeaderTimeout,
		Logger:        logger,
	})
	if err != nil {
		return nil, fmt.Errorf("rig: callback handler: %w", err)
	}
	r := receiver{store: store, log: logger}
	e := newEcho(cfg, logger)
	e.Any("/receive-task-result", echo.WrapHandler(h)) // the handler answers 405 itself
	e.GET("/callbacks/stats", r.stats)
	e.GET("/callbacks/*", r.byTaskID)
	e.GET("/healthz", r.healthz)
	return e, nil
}

// receiver serves the receiver's read endpoints.
type receiver struct {
	store callback.Store
	log   *slog.Logger
}

func (r receiver) stats(c echo.Context) error {
	st, err := r.store.Stats(c.Request().Context())
	if err != nil {
		return echo.NewHTTPError(http.StatusInternalServerError, "cannot read the callback store").SetInternal(err)
	}
	out := CallbackStats{Received: st.Received, Unique: st.Unique, Duplicates: st.Duplicates,
		ByStatus: make(map[string]int64, len(st.ByStatus))}
	for s, n := range st.ByStatus {
		out.ByStatus[string(s)] = n
	}
	return c.JSON(http.StatusOK, out)
}

func (r receiver) byTaskID(c echo.Context) error {
	id, ok := pathID(c, "/callbacks/")
	if !ok {
		return echo.NewHTTPError(http.StatusNotFound, "no callbacks for this task")
	}
	cbs, err := r.store.ByTaskID(c.Request().Context(), id)
	if err != nil {
		return echo.NewHTTPError(http.StatusInternalServerError, "cannot read the callback store").SetInternal(err)
	}
	if len(cbs) == 0 {
		return echo.NewHTTPError(http.StatusNotFound, "no callbacks for this task")
	}
	return c.JSON(http.StatusOK, TaskCallbacks{Code: http.StatusOK, TaskID: id, Callbacks: cbs})
}

func (r receiver) healthz(c echo.Context) error {
	if _, err := r.store.Stats(c.Request().Context()); err != nil {
		r.log.Warn("healthz: callback store", "err", err)
		return echo.NewHTTPError(http.StatusServiceUnavailable, "unhealthy: callback store unavailable")
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// OpenStore opens the store cfg names: a PostgreSQL database for a postgres:// or
// postgresql:// URL (callback/pgstore; receivers may share it), an in-memory store for
// ":memory:", otherwise the SQLite file cfg.CallbackDB. close releases it (after the server has
// stopped).
func OpenStore(ctx context.Context, cfg Config) (store callback.Store, close func() error, err error) {
	switch {
	case cfg.CallbackDB == ":memory:":
		return callback.NewMemoryStore(), func() error { return nil }, nil
	case strings.HasPrefix(cfg.CallbackDB, "postgres://") || strings.HasPrefix(cfg.CallbackDB, "postgresql://"):
		s, err := pgstore.Open(ctx, cfg.CallbackDB, pgstore.Config{})
		if err != nil {
			return nil, nil, fmt.Errorf("rig: open callback store %s: %w", RedactDB(cfg.CallbackDB), err)
		}
		return s, s.Close, nil
	}
	s, err := sqlitestore.New(ctx, cfg.CallbackDB)
	if err != nil {
		return nil, nil, fmt.Errorf("rig: open callback store %s: %w", cfg.CallbackDB, err)
	}
	return s, s.Close, nil
}

// RedactDB returns CALLBACK_DB fit for a log: a database URL with its password replaced by
// "xxxxx"; anything else as is.
func RedactDB(db string) string {
	if u, err := url.Parse(db); err == nil && u.Scheme != "" && u.User != nil {
		return u.Redacted()
	}
	return db
}

// loggingStore logs each new callback once it is stored, as the original receiver printed it.
type loggingStore struct {
	callback.Store
	log *slog.Logger
}

func (s loggingStore) Save(ctx context.Context, cb callback.Callback) (bool, error) {
	inserted, err := s.Store.Save(ctx, cb)
	if err == nil && inserted {
		s.log.InfoContext(ctx, "callback received", "task_id", cb.TaskID, "celery_task_id", cb.CeleryTaskID,
			"status", string(cb.Status), "event_id", cb.EventID, "attempt", cb.Attempt)
	}
	return inserted, err
}
