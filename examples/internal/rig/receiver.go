package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/celerybridge/celerybridge/callback"
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
// signature check when cfg.CallbackSecret is set, bodies up to cfg.MaxBodyBytes, dedupe by event
// id), GET /callbacks/{id}, GET /callbacks/stats and GET /healthz. Callbacks are kept in store,
// which the caller owns (OpenStore opens the one cfg names). Each new callback is logged at info
// level, as the original printed it. ctx is not retained.
func NewReceiver(ctx context.Context, cfg Config, store callback.Store, logger *slog.Logger) (*echo.Echo, error) {
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
		Store:        loggingStore{Store: store, log: logger},
		Secret:       secret(cfg),
		MaxBodyBytes: cfg.MaxBodyBytes,
		Logger:       logger,
	})
	if err != nil {
		return nil, fmt.Errorf("rig: callback handler: %w", err)
	}
	e := newEcho()
	e.Any("/receive-task-result", echo.WrapHandler(h)) // the handler answers 405 itself
	e.GET("/callbacks/stats", func(c echo.Context) error {
		st, err := store.Stats(c.Request().Context())
		if err != nil {
			return fail(c, http.StatusInternalServerError, err.Error())
		}
		out := CallbackStats{Received: st.Received, Unique: st.Unique, Duplicates: st.Duplicates,
			ByStatus: make(map[string]int64, len(st.ByStatus))}
		for s, n := range st.ByStatus {
			out.ByStatus[string(s)] = n
		}
		return c.JSON(http.StatusOK, out)
	})
	e.GET("/callbacks/:id", func(c echo.Context) error {
		id := c.Param("id")
		if id == "" || len(id) > maxIDLen {
			return fail(c, http.StatusNotFound, "no callbacks for this task")
		}
		cbs, err := store.ByTaskID(c.Request().Context(), id)
		if err != nil {
			return fail(c, http.StatusInternalServerError, err.Error())
		}
		if len(cbs) == 0 {
			return fail(c, http.StatusNotFound, "no callbacks for task "+id)
		}
		return c.JSON(http.StatusOK, TaskCallbacks{Code: http.StatusOK, TaskID: id, Callbacks: cbs})
	})
	e.GET("/healthz", func(c echo.Context) error {
		if _, err := store.Stats(c.Request().Context()); err != nil {
			return fail(c, http.StatusServiceUnavailable, err.Error())
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	return e, nil
}

// OpenStore opens the store cfg names: the SQLite file cfg.CallbackDB, or an in-memory store for
// ":memory:". close releases it (after the server has stopped).
func OpenStore(ctx context.Context, cfg Config) (store callback.Store, close func() error, err error) {
	if cfg.CallbackDB == ":memory:" {
		return callback.NewMemoryStore(), func() error { return nil }, nil
	}
	s, err := callback.NewSQLiteStore(ctx, cfg.CallbackDB)
	if err != nil {
		return nil, nil, fmt.Errorf("rig: open callback store %s: %w", cfg.CallbackDB, err)
	}
	return s, s.Close, nil
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
