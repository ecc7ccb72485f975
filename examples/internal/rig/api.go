package rig

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// SubmitResponse is the answer to POST /submit-task, the original's shape.
type SubmitResponse struct {
	Code           int    `json:"code"`
	Message        string `json:"message"`
	BusinessTaskID string `json:"business_task_id"`
	CeleryTaskID   string `json:"celery_task_id"`
}

// TaskStatus is the answer to GET /task-status/{id}: the original's fields (code, ids, status,
// result) plus error, retries and worker from the result backend.
type TaskStatus struct {
	Code           int    `json:"code"`
	BusinessTaskID string `json:"business_task_id"` // kwargs task_id; the Celery id when there is none
	CeleryTaskID   string `json:"celery_task_id"`
	Status         string `json:"status"` // PENDING (queued), STARTED, SUCCESS, FAILURE, ...
	// Result is the return value for SUCCESS, else null (as the original).
	Result any `json:"result"`
	// Error is str(exception) for FAILURE, REVOKED and RETRY, else null.
	Error *string `json:"error"`
	// Retries and Worker come from result_extended (the Go worker stores them; a Python worker
	// only with result_extended=True); null when not stored. Worker is also known from a STARTED
	// result of any worker with task_track_started.
	Retries *int    `json:"retries"`
	Worker  *string `json:"worker"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// maxIDLen bounds the id in /task-status/{id}; Celery and business ids are 36-character UUIDs.
const maxIDLen = 200

// dropTimeout bounds the clean-up of a failed submission's id mapping.
const dropTimeout = 2 * time.Second

// api is the task API. Its counters feed /metrics; it is safe for concurrent use.
type api struct {
	cfg      Config
	log      *slog.Logger
	pools    []celerycompat.Pool
	broker   *celerycompat.Broker
	producer *celerycompat.Producer
	backend  *celerycompat.Backend
	outbox   *callback.Outbox
	ids      idStore
	// submitter writes submissions, batched with concurrent ones.
	submitter *submitter

	submitOK, submitFailed, submitRejected atomic.Int64
}

// NewAPI returns the task API service (see the package documentation for its endpoints). Tasks
// are published through deps.Broker; results, and the mapping from business id to Celery id, are
// read and written through deps.Results. ctx is not retained, and nothing here touches Redis
// until a request comes, so the API starts while Redis is down and answers 503 until it is back.
//
// A submission writes the id mapping (both keys in one MULTI) and then publishes the message,
// sharing both round trips with the submissions that arrive meanwhile. If the mapping fails,
// nothing was written. If the publish fails, the mapping is deleted again. If
// that delete fails too (Redis went away between the calls), a mapping is left for a task that
// does not exist, but it is unreachable: the client got a 503 without either id, both ids are
// random, and the keys expire with the results. The reverse order would be worse: a mapping
// failure after a successful publish leaves a task that runs although the client was told it
// failed, and that the client then submits again.
func NewAPI(ctx context.Context, cfg Config, deps Deps) (*echo.Echo, error) {
	if err := deps.check(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db, err := brokerDB(cfg)
	if err != nil {
		return nil, err
	}
	a := &api{cfg: cfg, log: deps.logger(), pools: []celerycompat.Pool{deps.Broker},
		ids: idStore{pool: deps.results(), ttl: cfg.ResultExpires}}
	if deps.Results != nil {
		a.pools = append(a.pools, deps.Results)
	}
	if a.broker, err = celerycompat.NewBroker(deps.Broker, celerycompat.BrokerConfig{DB: db, VisibilityTimeout: cfg.VisibilityTimeout, Logger: a.log}); err != nil {
		return nil, fmt.Errorf("rig: broker: %w", err)
	}
	if a.backend, err = celerycompat.NewBackend(deps.results(), celerycompat.BackendConfig{
		ResultExpires: cfg.ResultExpires, Logger: a.log}); err != nil {
		return nil, fmt.Errorf("rig: backend: %w", err)
	}
	if a.producer, err = celerycompat.NewProducer(a.broker, celerycompat.ProducerConfig{Backend: a.backend}); err != nil {
		return nil, fmt.Errorf("rig: producer: %w", err)
	}
	a.submitter = newSubmitter(a.ids, a.producer)
	if a.outbox, err = callback.NewOutbox(deps.Broker, callback.OutboxConfig{Logger: a.log}); err != nil {
		return nil, fmt.Errorf("rig: outbox: %w", err)
	}
	e := newEcho()
	e.POST("/submit-task", a.submit)
	e.GET("/task-status/:id", a.status)
	e.GET("/healthz", a.healthz)
	e.GET("/metrics", a.metrics)
	return e, nil
}

// newEcho is an echo instance whose errors, its own included (404, 405), answer ErrorResponse.
func newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(recoverPanics)
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		code, msg := http.StatusInternalServerError, "internal error"
		var he *echo.HTTPError
		if errors.As(err, &he) {
			code, msg = he.Code, fmt.Sprint(he.Message)
		}
		_ = c.JSON(code, ErrorResponse{Code: code, Message: msg})
	}
	return e
}

// recoverPanics turns a handler panic into a 500 (echo's middleware.Recover would pull in
// golang.org/x/time, which the module does not require).
func recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return next(c)
	}
}

func fail(c echo.Context, code int, msg string) error {
	return c.JSON(code, ErrorResponse{Code: code, Message: msg})
}

func (a *api) submit(c echo.Context) error {
	ctx := c.Request().Context()
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, a.cfg.MaxBodyBytes))
	if err != nil {
		a.submitRejected.Add(1)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(c, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", mbe.Limit))
		}
		return fail(c, http.StatusBadRequest, "cannot read body: "+err.Error())
	}
	data, err := decodeObject(body)
	if err != nil {
		a.submitRejected.Add(1)
		return fail(c, http.StatusBadRequest, err.Error())
	}
	ids := taskIDs{Business: uuid.NewString(), Celery: uuid.NewString()}
	kwargs := map[string]any{"task_id": ids.Business, "data": data}
	if err := a.submitter.submit(ctx, ids, kwargs); err != nil {
		return a.submitFailure(c, ids, err)
	}
	a.submitOK.Add(1)
	return c.JSON(http.StatusOK, SubmitResponse{Code: http.StatusOK, Message: MsgSubmitted,
		BusinessTaskID: ids.Business, CeleryTaskID: ids.Celery})
}

func (a *api) submitFailure(c echo.Context, ids taskIDs, err error) error {
	a.submitFailed.Add(1)
	a.log.Error("submit failed", "task_id", ids.Celery, "business_task_id", ids.Business, "err", err)
	code := http.StatusServiceUnavailable
	if errors.Is(err, celerycompat.ErrEncode) || errors.Is(err, celerycompat.ErrBodyTooLarge) {
		code = http.StatusInternalServerError
	}
	return fail(c, code, MsgSubmitFailed+err.Error())
}

// decodeObject parses body as exactly one JSON object (numbers kept exact).
func decodeObject(body []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("body must be a JSON object, got an empty body")
		}
		return nil, fmt.Errorf("body is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("body must be a single JSON object, got data after it")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("body must be a JSON object, got %s", jsonKind(v))
	}
	return m, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	default:
		return "a number"
	}
}

func (a *api) status(c echo.Context) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	if id == "" || len(id) > maxIDLen {
		return fail(c, http.StatusNotFound, MsgNotFound)
	}
	ids, err := a.ids.lookup(ctx, id)
	switch {
	case errors.Is(err, errNoID):
		// Not submitted here, or its mapping expired: a Celery id with a stored result still
		// answers (tasks sent by the Python main_api, for instance).
		ids = taskIDs{Celery: id}
	case err != nil:
		a.log.Error("status lookup failed", "task_id", id, "err", err)
		return fail(c, http.StatusServiceUnavailable, "查询失败："+err.Error())
	}
	meta, err := a.backend.GetMeta(ctx, ids.Celery)
	if err != nil {
		a.log.Error("status read failed", "task_id", ids.Celery, "err", err)
		code := http.StatusServiceUnavailable
		if errors.Is(err, celerycompat.ErrDecode) {
			code = http.StatusInternalServerError
		}
		return fail(c, code, "查询失败："+err.Error())
	}
	if ids.Business == "" {
		if meta.Status == celerycompat.StatePending {
			return fail(c, http.StatusNotFound, MsgNotFound)
		}
		ids.Business, _ = meta.Kwargs["task_id"].(string)
		if ids.Business == "" {
			ids.Business = ids.Celery
		}
	}
	return c.JSON(http.StatusOK, statusOf(ids, meta))
}

// statusOf builds the status answer from a stored result.
func statusOf(ids taskIDs, meta *celerycompat.ResultMeta) TaskStatus {
	st := TaskStatus{Code: http.StatusOK, BusinessTaskID: ids.Business, CeleryTaskID: ids.Celery,
		Status: string(meta.Status), Retries: meta.Retries}
	switch {
	case meta.Status == celerycompat.StateSuccess:
		st.Result = meta.Result
	case meta.Status.IsException():
		if te, ok := meta.Result.(*celerycompat.TaskError); ok {
			msg := te.Message()
			st.Error = &msg
		}
	}
	worker := meta.Worker
	if info, ok := meta.Result.(map[string]any); ok && worker == "" && meta.Status == celerycompat.StateStarted {
		worker, _ = info["hostname"].(string)
	}
	if worker != "" {
		st.Worker = &worker
	}
	return st
}
