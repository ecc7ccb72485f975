package celerycompat

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// SendGroup publishes sigs as a group, as group(...).apply_async() does: every task carries the
// group id and its index, and the result backend (when the producer has one) saves the group,
// so Python's GroupResult.restore(group_id) finds it. It returns the group id and one handle
// per task, in order.
func (p *Producer) SendGroup(ctx context.Context, sigs []Signature, opts ...SendOption) (string, []*AsyncResult, error) {
	return p.sendHeader(ctx, uuid.NewString(), sigs, nil, opts)
}

// SendChord publishes a chord, as chord(header)(body) does: the header tasks run as a group and,
// when the last one finishes, body runs with their results in header order prepended to its
// args (unless immutable). The producer needs the Redis *Backend (chords count in it, as Celery's
// Redis backend does); with another ResultBackend it returns an error wrapping
// ErrChordUnsupported. The handle returned is the body's.
func (p *Producer) SendChord(ctx context.Context, header []Signature, body Signature, opts ...SendOption) (*AsyncResult, error) {
	if p.cfg.Backend == nil {
		return nil, fmt.Errorf("%w: a chord needs the producer's Backend", ErrInvalidConfig)
	}
	b := redisBackend(p.cfg.Backend)
	if b == nil {
		return nil, fmt.Errorf("%w: %T", ErrChordUnsupported, p.cfg.Backend)
	}
	if len(header) == 0 {
		return nil, fmt.Errorf("%w: empty chord header", ErrInvalidConfig)
	}
	body.Options = cloneMap(body.Options)
	id, _ := body.Options["task_id"].(string)
	if id == "" {
		id = uuid.NewString()
	}
	body.Options["task_id"] = id
	body.Options["reply_to"] = p.replyTo
	gid := uuid.NewString()
	if err := b.SetChordSize(ctx, gid, len(header)); err != nil {
		return nil, err
	}
	if _, _, err := p.sendHeader(ctx, gid, header, &body, opts); err != nil {
		return nil, err
	}
	return p.resultFor(id), nil
}

// sendHeader sends sigs as members of group gid (with the chord body when there is one).
func (p *Producer) sendHeader(ctx context.Context, gid string, sigs []Signature, body *Signature, opts []SendOption) (string, []*AsyncResult, error) {
	if len(sigs) == 0 {
		return "", nil, fmt.Errorf("%w: empty group", ErrInvalidConfig)
	}
	ids := make([]string, len(sigs))
	for i, s := range sigs {
		ids[i], _ = s.Options["task_id"].(string)
		if ids[i] == "" {
			ids[i] = uuid.NewString()
		}
	}
	// Only the Redis backend saves groups; Celery's rpc backend does not either (save_group is
	// NotImplemented there, and group.apply_async does not call it).
	if b := redisBackend(p.cfg.Backend); b != nil && body == nil {
		if err := b.SaveGroup(ctx, gid, ids); err != nil {
			return "", nil, err
		}
	}
	results := make([]*AsyncResult, len(sigs))
	for i, s := range sigs {
		all := []SendOption{WithTaskID(ids[i]), WithGroup(gid, &i)}
		if body != nil {
			all = append(all, WithChord(*body))
		}
		if q, _ := s.Options["queue"].(string); q != "" {
			all = append(all, WithQueue(q))
		}
		all = append(all, opts...)
		r, err := p.Send(ctx, s.Task, s.Args, s.Kwargs, all...)
		if err != nil {
			return gid, results, fmt.Errorf("group %s member %d: %w", gid, i, err)
		}
		results[i] = r
	}
	return gid, results, nil
}
