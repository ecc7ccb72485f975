package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Defaults of HandlerConfig.
const (
	// DefaultMaxBodyBytes bounds a callback request body.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultMaxConcurrent bounds the callback requests handled at once: with 1 MiB bodies, at
	// most 64 MiB of bodies are held.
	DefaultMaxConcurrent = 64
	// DefaultQueueTimeout is how long a request waits for a slot before it is answered 503.
	DefaultQueueTimeout = 5 * time.Second
)

// HandlerConfig configures the receiver. The zero value works: an in-memory store, no
// signature check, 1 MiB bodies, wall clock, no logging.
type HandlerConfig struct {
	// Store keeps the accepted callbacks and dedupes them. nil: NewMemoryStore().
	Store Store
	// Secret, when set, makes the handler require a valid signature (see the package
	// documentation) and answer 401 otherwise.
	Secret []byte
	// Tolerance is how far the signed timestamp may be from now, either way. Default
	// DefaultTolerance (5 min).
	Tolerance time.Duration
	// MaxBodyBytes bounds the body; a larger one is answered 413. Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxConcurrent bounds the requests whose bodies are read and handled at once, and so the
	// memory held for bodies (at most MaxConcurrent × MaxBodyBytes). A request beyond it waits
	// for a slot before its body is read, for at most QueueTimeout, and is then answered 503
	// with Retry-After (the sender retries). Default DefaultMaxConcurrent.
	MaxConcurrent int
	// QueueTimeout is how long a request waits for one of the MaxConcurrent slots. Default
	// DefaultQueueTimeout.
	QueueTimeout time.Duration
	// OnCallback, when set, is called once for each new event id, before the callback is
	// stored. An error is answered 500 and the callback is not stored, so the sender retries and
	// OnCallback sees it again. A repeated event id is answered 200 without calling it. "Once"
	// holds within one handler; handlers in several processes sharing a store may each call it
	// for a concurrent duplicate, so make it idempotent by EventID if you run more than one.
	OnCallback func(ctx context.Context, cb Callback) error
	// Clock returns the current time, for ReceivedAt and the signature window. Default time.Now.
	Clock func() time.Time
	// Logger receives rejected and failed requests. nil: silent.
	Logger *slog.Logger
}

// handler is the receiver's http.Handler.
type handler struct {
	cfg   HandlerConfig
	sig   *signer
	log   *slog.Logger
	locks keyedMutex
	slots chan struct{} // one per request being read or handled (MaxConcurrent)
}

// NewHandler returns the callback receiver: an http.Handler to mount at the callback path (for
// example "/receive-task-result"). It answers POST only (405 otherwise, with Allow: POST);
// 401 for a missing, invalid or stale signature when Secret is set; 413 for a body over
// MaxBodyBytes; 400 for a body that is not a valid callback (see ParseCallback), saying what is
// wrong; 500 when OnCallback or the store fails (the cause is logged, not answered); 503 with
// Retry-After when MaxConcurrent requests are in progress for longer than QueueTimeout; 200 otherwise, also for a duplicate, which is
// not applied again. Every answer is JSON in the original receiver's shape:
// {"code": status, "message": text, "received_data": the callback (200 only), "event_id",
// "duplicate"}. It is safe for concurrent use.
func NewHandler(cfg HandlerConfig) (http.Handler, error) {
	if cfg.Store == nil {
		cfg.Store = NewMemoryStore()
	}
	if cfg.Tolerance == 0 {
		cfg.Tolerance = DefaultTolerance
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.QueueTimeout == 0 {
		cfg.QueueTimeout = DefaultQueueTimeout
	}
	switch {
	case cfg.MaxConcurrent < 0:
		return nil, fmt.Errorf("%w: negative MaxConcurrent %d", ErrInvalidConfig, cfg.MaxConcurrent)
	case cfg.QueueTimeout < 0:
		return nil, fmt.Errorf("%w: negative QueueTimeout %v", ErrInvalidConfig, cfg.QueueTimeout)
	case cfg.Tolerance < 0:
		return nil, fmt.Errorf("%w: negative Tolerance %v", ErrInvalidConfig, cfg.Tolerance)
	case cfg.MaxBodyBytes < 0:
		return nil, fmt.Errorf("%w: negative MaxBodyBytes %d", ErrInvalidConfig, cfg.MaxBodyBytes)
	}
	return &handler{cfg: cfg, sig: newSigner(cfg.Secret), log: loggerOrDiscard(cfg.Logger), locks: keyedMutex{m: map[string]*keyedEntry{}},
		slots: make(chan struct{}, cfg.MaxConcurrent)}, nil
}

// reply is the JSON answer, shaped like the original receiver's.
type reply struct {
	Code         int             `json:"code"`
	Message      string          `json:"message"`
	ReceivedData json.RawMessage `json:"received_data,omitempty"`
	EventID      string          `json:"event_id,omitempty"`
	Duplicate    bool            `json:"duplicate,omitempty"`
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.reject(ctx, w, r, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use POST", nil)
		return
	}
	if !h.acquire(ctx) {
		w.Header().Set("Retry-After", "1")
		h.reject(ctx, w, r, http.StatusServiceUnavailable, "too many callbacks in progress; retry later", nil)
		return
	}
	defer func() { <-h.slots }()
	body, err := readBody(w, r, h.cfg.MaxBodyBytes)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.reject(ctx, w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", h.cfg.MaxBodyBytes), nil)
			return
		}
		h.reject(ctx, w, r, http.StatusBadRequest, "cannot read body", err)
		return
	}
	now := h.cfg.Clock()
	if len(h.cfg.Secret) > 0 {
		err := h.sig.verify(r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, now, h.cfg.Tolerance)
		if err != nil {
			h.reject(ctx, w, r, http.StatusUnauthorized, "signature rejected: "+signatureReason(err), err)
			return
		}
	}
	cb, err := parseCallback(body)
	if err != nil {
		var pe *PayloadError
		msg := err.Error()
		if errors.As(err, &pe) {
			msg = "invalid callback: " + pe.Reason
			if pe.Field != "" {
				msg = "invalid callback: " + pe.Field + " " + pe.Reason
			}
		}
		h.reject(ctx, w, r, http.StatusBadRequest, msg, nil)
		return
	}
	cb.ReceivedAt = now

	inserted, err := h.accept(ctx, cb)
	if err != nil {
		h.log.ErrorContext(ctx, "callback not accepted", "event_id", cb.EventID, "task_id", cb.TaskID, "error", err)
		writeJSON(w, http.StatusInternalServerError, reply{Code: http.StatusInternalServerError,
			Message: "callback not stored; retry later", EventID: cb.EventID})
		return
	}
	rep := reply{Code: http.StatusOK, Message: "callback received", EventID: cb.EventID}
	if !inserted {
		rep.Message, rep.Duplicate = "duplicate callback: event "+cb.EventID+" was already received and is not applied again", true
	}
	writeAccepted(w, rep, cb.Body)
}

// writeAccepted answers 200 with rep and the body as received_data. The body is spliced in as
// is: ParseCallback has checked that it is a JSON object, so re-encoding it would only cost time.
func writeAccepted(w http.ResponseWriter, rep reply, body []byte) {
	out := make([]byte, 0, len(rep.Message)+len(rep.EventID)+len(body)+96)
	out = append(out, `{"code":`...)
	out = strconv.AppendInt(out, int64(rep.Code), 10)
	out = append(out, `,"message":`...)
	out = appendJSONString(out, rep.Message)
	out = append(out, `,"event_id":`...)
	out = appendJSONString(out, rep.EventID)
	if rep.Duplicate {
		out = append(out, `,"duplicate":true`...)
	}
	out = append(out, `,"received_data":`...)
	out = append(out, body...)
	out = append(out, '}')
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out) // the client went away; nothing to do
}

var jsonContentType = []string{"application/json"}

// appendJSONString appends s as a JSON string; a plain ASCII string (the usual ids and
// messages) is copied without going through encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(s) // a string always encodes
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// readBody reads at most limit bytes of the request body as they arrive; a longer body is an
// *http.MaxBytesError. The announced Content-Length is not trusted for memory: a client that
// announces a megabyte and sends a hundred bytes costs a hundred bytes (plus the first small
// buffer), not a megabyte. The buffer grows with what was actually received.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	var buf bytes.Buffer
	if n := r.ContentLength; n > 0 {
		buf.Grow(int(min(n, limit, initialBodyBuffer)) + 1) // +1: a body exactly n long needs no regrowth to see EOF
	}
	if _, err := buf.ReadFrom(rd); err != nil {
		return nil, err
	}
	if n := r.ContentLength; n >= 0 && int64(buf.Len()) != n {
		// Shorter than announced: the client went away mid-body (net/http reports that itself
		// on a real connection; a handler called directly may not).
		return nil, io.ErrUnexpectedEOF
	}
	return buf.Bytes(), nil
}

// initialBodyBuffer is the most readBody reserves before bytes arrive.
const initialBodyBuffer = 16 << 10

// acquire takes a slot, waiting at most QueueTimeout; false when none came in time or the
// client went away.
func (h *handler) acquire(ctx context.Context) bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(h.cfg.QueueTimeout)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// accept hands cb to the application once and stores it. inserted is false for a duplicate.
func (h *handler) accept(ctx context.Context, cb Callback) (inserted bool, err error) {
	if h.cfg.OnCallback == nil {
		return h.cfg.Store.Save(ctx, cb)
	}
	// Serialise per event id so a concurrent duplicate waits for the first to be stored.
	unlock := h.locks.lock(cb.EventID)
	defer unlock()
	seen, err := h.cfg.Store.Seen(ctx, cb.EventID)
	if err != nil {
		return false, err
	}
	if !seen {
		if err := h.cfg.OnCallback(ctx, cb); err != nil {
			return false, fmt.Errorf("OnCallback for event %s: %w", cb.EventID, err)
		}
	}
	// For a duplicate this only counts it.
	return h.cfg.Store.Save(ctx, cb)
}

// reject answers an error status and logs it at debug level (rejections are the client's
// problem, and a flood of them must not flood the log).
func (h *handler) reject(ctx context.Context, w http.ResponseWriter, r *http.Request, status int, msg string, err error) {
	h.log.DebugContext(ctx, "callback rejected", "status", status, "message", msg, "remote", r.RemoteAddr, "error", err)
	writeJSON(w, status, reply{Code: status, Message: msg})
}

// signatureReason is the client-facing reason for a 401.
func signatureReason(err error) string {
	switch {
	case errors.Is(err, ErrSignatureMissing):
		return "missing " + HeaderTimestamp + " or " + HeaderSignature
	case errors.Is(err, ErrSignatureExpired):
		return "timestamp outside the tolerance window"
	default:
		return "signature does not match"
	}
}

func writeJSON(w http.ResponseWriter, status int, v reply) {
	b, err := json.Marshal(v)
	if err != nil {
		// Cannot happen: reply has only strings, numbers and valid raw JSON.
		b = []byte(`{"code":500,"message":"cannot encode reply"}`)
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client went away; nothing to do
}

// keyedMutex serialises work per key; entries are removed when unused.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
