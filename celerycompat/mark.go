package celerycompat

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// MarkOption adds request details to what a Mark* call stores. Later options win.
type MarkOption func(*ResultMeta)

// ResultGroupID stores group_id (the task is a group or chord member).
func ResultGroupID(groupID string) MarkOption { return func(m *ResultMeta) { m.GroupID = groupID } }

// ResultParentID stores parent_id (the task was published by another task).
func ResultParentID(parentID string) MarkOption { return func(m *ResultMeta) { m.ParentID = parentID } }

// ResultChildren stores children: result tuples such as ResultTuple(id), for the tasks this one
// published (callbacks, the next chain link, a retry).
func ResultChildren(children ...any) MarkOption {
	return func(m *ResultMeta) { m.Children = children }
}

// ResultRequest copies from the message being executed what Celery copies from its request:
// group_id, parent_id and, when the backend has ResultExtended, the task name, args, kwargs,
// retries and queue (the routing key), plus worker = hostname.
func ResultRequest(msg *Message, hostname string) MarkOption {
	return func(m *ResultMeta) {
		if msg == nil {
			return
		}
		m.GroupID, m.ParentID = msg.Group, msg.ParentID
		m.Name, m.Args, m.Kwargs = msg.Task, msg.Args, msg.Kwargs
		m.Worker, m.Queue = hostname, msg.DeliveryInfo.RoutingKey
		retries := msg.Retries
		m.Retries = &retries
	}
}

// ResultTuple is the JSON form of an AsyncResult in "children": [[id, parent], null], with the
// parent tuple null.
func ResultTuple(taskID string) any { return []any{[]any{taskID, nil}, nil} }

func (b *Backend) mark(ctx context.Context, m ResultMeta, opts []MarkOption) (bool, error) {
	return storeMark(ctx, b, nil, m, opts)
}

// storeMark applies opts to m and stores it in rb for the task req describes (nil: none).
func storeMark(ctx context.Context, rb ResultBackend, req *Message, m ResultMeta, opts []MarkOption) (bool, error) {
	for _, o := range opts {
		o(&m)
	}
	return rb.StoreState(ctx, req, m)
}

// MarkStarted stores STARTED with result {"pid": pid, "hostname": hostname}, as a worker with
// task_track_started does before running the task.
func (b *Backend) MarkStarted(ctx context.Context, id string, pid int, hostname string, opts ...MarkOption) (bool, error) {
	return b.mark(ctx, startedMeta(id, pid, hostname), opts)
}

func startedMeta(id string, pid int, hostname string) ResultMeta {
	h, _ := json.Marshal(hostname) // a string cannot fail
	res := json.RawMessage(`{"pid": ` + strconv.Itoa(pid) + `, "hostname": ` + string(h) + `}`)
	return ResultMeta{TaskID: id, Status: StateStarted, Result: res}
}

// MarkSuccess stores SUCCESS with the task's return value.
func (b *Backend) MarkSuccess(ctx context.Context, id string, result any, opts ...MarkOption) (bool, error) {
	return b.mark(ctx, ResultMeta{TaskID: id, Status: StateSuccess, Result: result}, opts)
}

// MarkFailure stores FAILURE with err as an exception dict (see ErrorToTaskError) and the
// traceback text (the TaskError's own Traceback when traceback is empty).
func (b *Backend) MarkFailure(ctx context.Context, id string, err error, traceback string, opts ...MarkOption) (bool, error) {
	return b.mark(ctx, failureMeta(id, err, traceback), opts)
}

func failureMeta(id string, err error, traceback string) ResultMeta {
	te := protocol.ErrorToTaskError(err)
	if traceback == "" && te != nil {
		traceback = te.Traceback
	}
	return ResultMeta{TaskID: id, Status: StateFailure, Result: te, Traceback: traceback}
}

// MarkRetry stores RETRY with err as an exception dict (null when err is nil) and, unless
// ResultChildren says otherwise, children = the re-sent message itself, as Celery does.
func (b *Backend) MarkRetry(ctx context.Context, id string, err error, traceback string, opts ...MarkOption) (bool, error) {
	return b.mark(ctx, retryMeta(id, err, traceback), opts)
}

func retryMeta(id string, err error, traceback string) ResultMeta {
	m := ResultMeta{TaskID: id, Status: StateRetry, Traceback: traceback, Children: []any{ResultTuple(id)}}
	if err != nil {
		te := protocol.ErrorToTaskError(err)
		m.Result = te
		if traceback == "" {
			m.Traceback = te.Traceback
		}
	}
	return m
}

// MarkRevoked stores REVOKED with a celery.exceptions.TaskRevokedError whose message is reason
// ("revoked", "expired" or "terminated"; empty means "revoked"). Python's get() raises
// TaskRevokedError for it.
func (b *Backend) MarkRevoked(ctx context.Context, id string, reason string, opts ...MarkOption) (bool, error) {
	return b.mark(ctx, revokedMeta(id, reason), opts)
}

func revokedMeta(id, reason string) ResultMeta {
	if reason == "" {
		reason = RevokedReasonRevoked
	}
	te := &TaskError{ExcType: "TaskRevokedError", ExcModule: "celery.exceptions", ExcMessage: []any{reason}}
	return ResultMeta{TaskID: id, Status: StateRevoked, Result: te}
}
