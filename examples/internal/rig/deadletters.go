package rig

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/labstack/echo/v4"
)

// DeadLetters is the answer to GET /callbacks/dead: the callbacks the worker's dispatcher gave
// up on (MetricOutbox{state="dead"} counts them), oldest first.
type DeadLetters struct {
	Code        int                   `json:"code"`
	DeadLetters []callback.DeadLetter `json:"dead_letters"`
}

// ReplayRequest is the body of POST /callbacks/dead/replay: the event ids to deliver again
// (from GET /callbacks/dead); empty or absent means every dead letter.
type ReplayRequest struct {
	EventIDs []string `json:"event_ids"`
}

// ReplayResponse is the answer to POST /callbacks/dead/replay.
type ReplayResponse struct {
	Code     int      `json:"code"`
	Replayed []string `json:"replayed"`          // put back into the outbox, due now
	Unknown  []string `json:"unknown,omitempty"` // not dead letters (already replayed, or never dead)
}

// maxDeadList bounds GET /callbacks/dead (?limit=, default and maximum).
const maxDeadList = 1000

// deadLetters lists dead-lettered callbacks: GET /callbacks/dead?limit=N.
func (a *api) deadLetters(c echo.Context) error {
	limit := maxDeadList
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return echo.NewHTTPError(http.StatusBadRequest, "limit must be a positive integer")
		}
		limit = min(n, maxDeadList)
	}
	ctx, cancel := redisCtx(c, a.cfg)
	defer cancel()
	dls, err := a.outbox.DeadLetters(ctx, limit)
	if err != nil {
		a.log.Error("list dead letters", "err", err)
		return echo.NewHTTPError(http.StatusServiceUnavailable, msgRedisDown)
	}
	return c.JSON(http.StatusOK, DeadLetters{Code: http.StatusOK, DeadLetters: dls})
}

// replay puts dead letters back into the outbox (callback.Outbox.Replay); a running worker's
// dispatcher delivers them again.
func (a *api) replay(c echo.Context) error {
	body, err := readJSONBody(c, a.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	var req ReplayRequest
	if len(body) > 0 {
		if err := decodeInto(body, &req); err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, `body must be {"event_ids": [...]}`)
		}
	}
	ctx, cancel := redisCtx(c, a.cfg)
	defer cancel()
	if len(req.EventIDs) == 0 {
		dls, err := a.outbox.DeadLetters(ctx, 0)
		if err != nil {
			a.log.Error("list dead letters", "err", err)
			return echo.NewHTTPError(http.StatusServiceUnavailable, msgRedisDown)
		}
		for _, d := range dls {
			req.EventIDs = append(req.EventIDs, d.EventID)
		}
	}
	out := ReplayResponse{Code: http.StatusOK, Replayed: []string{}}
	err = a.outbox.Replay(ctx, req.EventIDs...)
	var per callback.ReplayErrors
	switch {
	case err == nil:
		out.Replayed = append(out.Replayed, req.EventIDs...)
	case errors.As(err, &per):
		for i, e := range per {
			if e == nil {
				out.Replayed = append(out.Replayed, req.EventIDs[i])
			} else {
				out.Unknown = append(out.Unknown, req.EventIDs[i])
			}
		}
	default:
		a.log.Error("replay dead letters", "err", err)
		return echo.NewHTTPError(http.StatusServiceUnavailable, msgRedisDown)
	}
	return c.JSON(http.StatusOK, out)
}
