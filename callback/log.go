package callback

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// loggerOrDiscard returns l, or a logger that drops everything when l is nil.
func loggerOrDiscard(l *slog.Logger) *slog.Logger {
	if l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// rateLimited logs at most once per interval, counting what it suppressed. It uses the wall
// clock, not the injected one: it paces output for people.
type rateLimited struct {
	every      time.Duration
	level      slog.Level
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *rateLimited) log(l *slog.Logger, msg string, err error, args ...any) {
	r.mu.Lock()
	now := time.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	l.Log(context.Background(), r.level, msg, append(args, "error", err, "suppressed", n)...)
}
