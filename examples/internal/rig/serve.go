package rig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// newEcho is an echo instance with the HTTP limits of cfg (header, read and idle timeouts,
// header size; see the package documentation) and one error handler for every error, echo's
// own included (404, 405): handlers return echo.NewHTTPError(code, message) and it answers
// ErrorResponse. Any other error is a 500 "internal error"; its text, and an HTTPError's
// internal cause, go to the log, never to the client.
func newEcho(cfg Config, log *slog.Logger) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Server.ReadHeaderTimeout = cfg.HeaderTimeout
	e.Server.ReadTimeout = cfg.ReadTimeout
	e.Server.IdleTimeout = cfg.IdleTimeout
	e.Server.MaxHeaderBytes = cfg.MaxHeaderBytes
	e.Use(recoverPanics)
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		code, msg := http.StatusInternalServerError, "internal error"
		var he *echo.HTTPError
		if errors.As(err, &he) {
			code, msg = he.Code, fmt.Sprint(he.Message)
			if he.Internal != nil {
				log.Debug("request failed", "path", c.Path(), "status", code, "err", he.Internal)
			}
		} else {
			log.Error("request failed", "path", c.Path(), "err", err)
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(code)
			return
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

// limitConcurrent bounds the requests of a route that are read and handled at once to
// cfg.MaxConcurrent, and so the bodies held in memory. A request beyond it waits for a slot
// up to cfg.HeaderTimeout (before its body is read), then is answered 503 with Retry-After.
func limitConcurrent(cfg Config) echo.MiddlewareFunc {
	slots := make(chan struct{}, cfg.MaxConcurrent)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			select {
			case slots <- struct{}{}:
			default:
				t := time.NewTimer(cfg.HeaderTimeout)
				defer t.Stop()
				select {
				case slots <- struct{}{}:
				case <-t.C:
					c.Response().Header().Set("Retry-After", "1")
					return echo.NewHTTPError(http.StatusServiceUnavailable, "too many requests in progress; retry later")
				case <-c.Request().Context().Done():
					return echo.NewHTTPError(http.StatusServiceUnavailable, "client went away")
				}
			}
			defer func() { <-slots }()
			return next(c)
		}
	}
}

// Serve serves e on ln until ctx ends, then shuts it down gracefully, waiting up to grace for the
// requests in flight. It returns nil after a clean shutdown, the server's error if it failed, or
// the shutdown's error (context.DeadlineExceeded when requests outlived grace). ln is closed.
func Serve(ctx context.Context, e *echo.Echo, ln net.Listener, grace time.Duration) error {
	e.HideBanner, e.HidePort = true, true
	e.Listener = ln
	errc := make(chan error, 1)
	go func() { errc <- e.Start("") }()
	select {
	case err := <-errc:
		return fmt.Errorf("rig: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	serr := e.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("rig: serve %s: %w", ln.Addr(), err)
	}
	if serr != nil {
		return fmt.Errorf("rig: shutdown %s: %w", ln.Addr(), serr)
	}
	return nil
}
