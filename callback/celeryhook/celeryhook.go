// Package celeryhook connects a callback outbox to a celerycompat worker: each task_success and
// task_failure records a callback in the outbox before the message is acknowledged, replacing
// the original rig's signal handlers that POSTed once and forgot.
//
//	celeryhook.Connect(worker.Hooks(), outbox, celeryhook.Options{}, "tasks.process_task")
package celeryhook

import (
	"context"
	"errors"
	"fmt"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/celerycompat"
)

// Options says how a callback is built from a task. The zero value does what the original rig
// did.
type Options struct {
	// BusinessIDKwarg names the kwarg holding the business id sent as "task_id" (default
	// "task_id", as in the original tasks.process_task). Without it the Celery id is sent.
	BusinessIDKwarg string
	// URLKwarg, when set, names a kwarg holding a per-task callback URL; the outbox accepts it only
	// if it matches its allow-list.
	URLKwarg string
}

// Connect registers task_success and task_failure hooks on hooks that enqueue a callback in ob,
// for the named tasks (every task when none are named). Both hooks are celerycompat.BeforeAck
// hooks: a failed Enqueue is returned to the worker, which retries the hook and, if Redis stays
// unreachable, leaves the message un-acked so the task runs again: a callback is delayed or
// repeated, never lost.
func Connect(hooks *celerycompat.Hooks, ob *callback.Outbox, opts Options, tasks ...string) {
	if opts.BusinessIDKwarg == "" {
		opts.BusinessIDKwarg = "task_id"
	}
	hooks.OnTaskSuccess(celerycompat.BeforeAck(func(ctx context.Context, e *celerycompat.TaskSuccess) error {
		return enqueue(ctx, ob, opts, e.Request, callback.StatusSuccess, e.Result, "")
	}), tasks...)
	hooks.OnTaskFailure(celerycompat.BeforeAck(func(ctx context.Context, e *celerycompat.TaskFailure) error {
		msg := ""
		if e.Exception != nil {
			msg = e.Exception.Error()
			if te, ok := e.Exception.(*celerycompat.TaskError); ok {
				msg = te.Message() // str(exception), as the original handler sends
			}
		}
		return enqueue(ctx, ob, opts, e.Request, callback.StatusFailed, nil, msg)
	}), tasks...)
}

// Event builds the callback event for a task outcome.
func Event(req *celerycompat.Request, opts Options, status callback.Status, result any, errMsg string) callback.Event {
	ev := callback.Event{CeleryTaskID: req.ID, TaskName: req.Task, Status: status, Result: result, Error: errMsg}
	key := opts.BusinessIDKwarg
	if key == "" {
		key = "task_id"
	}
	if v, ok := req.Kwargs[key].(string); ok {
		ev.TaskID = v
	}
	if opts.URLKwarg != "" {
		if v, ok := req.Kwargs[opts.URLKwarg].(string); ok {
			ev.URL = v
		}
	}
	return ev
}

func enqueue(ctx context.Context, ob *callback.Outbox, opts Options, req *celerycompat.Request, status callback.Status, result any, errMsg string) error {
	ev := Event(req, opts, status, result, errMsg)
	if err := ob.Enqueue(ctx, ev); err != nil {
		if errors.Is(err, callback.ErrURLNotAllowed) || errors.Is(err, callback.ErrInvalidEvent) {
			// Retrying cannot fix these: the worker logs them and acks instead of re-running.
			return fmt.Errorf("%w: %s callback for task %s: %w", celerycompat.ErrHookPermanent, status, req.ID, err)
		}
		return fmt.Errorf("enqueue %s callback for task %s: %w", status, req.ID, err)
	}
	return nil
}
