package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
)

// The original's messages, restored where the document lost characters.
const (
	MsgSubmitted    = "任务已提交至队列"    // POST /submit-task: task submitted to the queue
	MsgSubmitFailed = "任务提交失败："     // followed by the cause
	MsgNotFound     = "任务不存在或已完成清理" // GET /task-status: unknown or cleaned up
	MsgTaskDone     = "任务执行完成"      // tasks.process_task's result message
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

// healthTimeout bounds GET /healthz: it answers "unhealthy" within it when Redis hangs.
const healthTimeout = 800 * time.Millisecond

// Messages of the 503s: the cause is logged, never answered.
const (
	msgRedisDown    = "redis unavailable"
	msgRabbitDown   = "rabbitmq unavailable"
	msgLookupFailed = "查询失败：" + msgRedisDown // GET /task-status: lookup failed
)

// pinger is a transport that can tell whether its broker answers (amqp.Transport.Ping).
type pinger interface {
	Ping(ctx context.Context) error
}

// api is the task API. Its counters feed /metrics; it is safe for concurrent use.
type api struct {
	cfg      Config
	log      *slog.Logger
	pools    []celerycompat.Pool
	broker   *celerycompat.Broker // nil when tasks go through another transport (RabbitMQ)
	pinger   pinger               // the transport when it is not Redis (RabbitMQ): /healthz asks it
	producer *celerycompat.Producer
	backend  *celerycompat.Backend
	outbox   *callback.Outbox
	ids      idStore
	// submitter writes submissions, batched with concurrent ones.
	submitter *submitter

	submitOK, submitFailed, submitRejected atomic.Int64
}

// NewAPI returns the task API service (see the package documentation for its endpoints and
// limits). Tasks are published through deps.Broker; results, and the mapping from business id
// to Celery id, are read and written through deps.Results. Nothing here touches Redis until a
// request comes, so the API starts while Redis is down and answers 503 until it is back.
//
// A submission writes the id mapping (both keys, all or nothing, and only while the request's
// Redis deadline has not passed by Redis's clock) and then publishes the message, sharing both
// round trips with the submissions that arrive meanwhile. If the mapping fails, nothing was
// written, even when Redis hung and executes the write later. If the publish fails, the
// mapping is deleted again; if that delete fails too (Redis went away between the calls), a
// mapping is left for a task that does not exist, but it is unreachable: the client got a 503
// without either id, both ids are random, and the keys expire with the results. The reverse
// order would be worse: a mapping failure after a successful publish leaves a task that runs
// although the client was told it failed, and that the client then submits again.
//
// The publish carries its deadline to Redis as the mapping does (celerycompat checks a publish's
// ctx deadline against Redis's clock), and the client is answered 503 only after that deadline:
// a publish that reached a Redis which then hung, and that Redis runs only after the answer,
// queues nothing. Both checks assume the API's clock and Redis's agree to well within
// RedisTimeout (NTP keeps them within milliseconds); a Redis clock behind by d lets a write run
// up to d late. A task the client was told failed is queued only if Redis ran its publish
// before the deadline and its reply was then lost (Redis hung, or the connection broke, in
// between): no deadline can tell that from a publish that never ran. Through RabbitMQ
// (Deps.Transport) the publish has no such check, and a publish the broker takes late still
// queues its task.
func NewAPI(cfg Config, deps Deps) (*echo.Echo, error) {
	if err := deps.check(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &api{cfg: cfg, log: deps.logger(), pools: []celerycompat.Pool{deps.Broker},
		ids: idStore{pool: deps.results(), ttl: cfg.ResultExpires}}
	if deps.Results != nil {
		a.pools = append(a.pools, deps.Results)
	}
	tr, broker, err := deps.transport(cfg, a.log)
	if err != nil {
		return nil, err
	}
	a.broker = broker // nil on RabbitMQ: /metrics then shows no queue lengths
	if broker == nil {
		a.pinger, _ = tr.(pinger)
	}
	if a.backend, err = celerycompat.NewBackend(deps.results(), celerycompat.BackendConfig{
		ResultExpires: cfg.ResultExpires, Logger: a.log}); err != nil {
		return nil, fmt.Errorf("rig: backend: %w", err)
	}
	if a.producer, err = celerycompat.NewProducer(tr, celerycompat.ProducerConfig{Backend: a.backend}); err != nil {
		return nil, fmt.Errorf("rig: producer: %w", err)
	}
	a.submitter = newSubmitter(a.ids, a.producer, cfg.RedisTimeout)
	if a.outbox, err = callback.NewOutbox(deps.Broker, callback.OutboxConfig{Logger: a.log}); err != nil {
		return nil, fmt.Errorf("rig: outbox: %w", err)
	}
	e := newEcho(cfg, a.log)
	bodies := limitConcurrent(cfg) // one bound for every route that reads a body
	e.POST("/submit-task", a.submit, bodies)
	e.GET("/task-status/*", a.status)
	e.GET("/healthz", a.healthz)
	e.GET("/metrics", a.metrics)
	e.GET("/callbacks/dead", a.deadLetters)
	e.POST("/callbacks/dead/replay", a.replay, bodies)
	return e, nil
}

func (a *api) submit(c echo.Context) error {
	body, err := readJSONBody(c, a.cfg.MaxBodyBytes)
	if err != nil {
		a.submitRejected.Add(1)
		return err
	}
	data, err := decodeObject(body)
	if err == nil {
		err = checkData(data, a.cfg.MaxBodyBytes)
	}
	if err != nil {
		a.submitRejected.Add(1)
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return he
		}
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	ids := taskIDs{Business: uuid.NewString(), Celery: uuid.NewString()}
	kwargs := map[string]any{"task_id": ids.Business, "data": data}
	if err := a.submitter.submit(c.Request().Context(), ids, kwargs); err != nil {
		return a.submitFailure(ids, err)
	}
	a.submitOK.Add(1)
	return c.JSON(http.StatusOK, SubmitResponse{Code: http.StatusOK, Message: MsgSubmitted,
		BusinessTaskID: ids.Business, CeleryTaskID: ids.Celery})
}

// submitFailure answers a submission that did not make it to Redis. An encoding refusal is the
// data's fault (4xx, though checkData should have caught it); anything else is Redis (503).
// The cause is logged, not answered.
func (a *api) submitFailure(ids taskIDs, err error) error {
	switch {
	case errors.Is(err, celerycompat.ErrBodyTooLarge):
		a.submitRejected.Add(1)
		return echo.NewHTTPError(http.StatusRequestEntityTooLarge, MsgSubmitFailed+"task too large").SetInternal(err)
	case errors.Is(err, celerycompat.ErrEncode):
		a.submitRejected.Add(1)
		return echo.NewHTTPError(http.StatusBadRequest, MsgSubmitFailed+"data cannot be encoded as a task").SetInternal(err)
	}
	a.submitFailed.Add(1)
	a.log.Error("submit failed", "task_id", ids.Celery, "business_task_id", ids.Business, "err", err)
	if a.pinger != nil && errors.Is(err, celerycompat.ErrBroker) {
		return echo.NewHTTPError(http.StatusServiceUnavailable, MsgSubmitFailed+msgRabbitDown)
	}
	return echo.NewHTTPError(http.StatusServiceUnavailable, MsgSubmitFailed+msgRedisDown)
}

// pathID is the id at the end of the request path after prefix, decoded (URL.Path is: an id
// sent percent-encoded, or containing '/', reads back as stored).
func pathID(c echo.Context, prefix string) (string, bool) {
	id := strings.TrimPrefix(c.Request().URL.Path, prefix)
	return id, id != "" && len(id) <= maxIDLen
}

func (a *api) status(c echo.Context) error {
	id, ok := pathID(c, "/task-status/")
	if !ok {
		return echo.NewHTTPError(http.StatusNotFound, MsgNotFound)
	}
	ctx, cancel := redisCtx(c, a.cfg)
	defer cancel()
	var ids taskIDs
	err := retryBroken(ctx, func(ctx context.Context) error {
		var err error
		ids, err = a.ids.lookup(ctx, id)
		return err
	})
	switch {
	case errors.Is(err, errNoID):
		// Not submitted here, or its mapping expired: a Celery id with a stored result still
		// answers (tasks sent by the Python main_api, for instance).
		ids = taskIDs{Celery: id}
	case err != nil:
		a.log.Error("status lookup failed", "task_id", id, "err", err)
		return echo.NewHTTPError(http.StatusServiceUnavailable, msgLookupFailed)
	}
	var meta *celerycompat.ResultMeta
	err = retryBroken(ctx, func(ctx context.Context) error {
		var err error
		meta, err = a.backend.GetMeta(ctx, ids.Celery)
		return err
	})
	if err != nil {
		a.log.Error("status read failed", "task_id", ids.Celery, "err", err)
		if errors.Is(err, celerycompat.ErrDecode) {
			return echo.NewHTTPError(http.StatusInternalServerError, "查询失败：stored result cannot be read")
		}
		return echo.NewHTTPError(http.StatusServiceUnavailable, msgLookupFailed)
	}
	if ids.Business == "" {
		if meta.Status == celerycompat.StatePending {
			return echo.NewHTTPError(http.StatusNotFound, MsgNotFound)
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

// redisCtx is the request's context bounded by cfg.RedisTimeout, for its Redis steps.
func redisCtx(c echo.Context, cfg Config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request().Context(), cfg.RedisTimeout)
}
