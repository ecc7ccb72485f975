package loadtest

import (
	"time"

	"github.com/valyala/fasthttp"
)

// newFastClient returns the default submission client: fasthttp, up to conns connections to
// the API. A load generator must cost little next to what it measures; on 2 cores net/http's
// client took as much CPU per submission as the Go API itself.
func newFastClient(conns int) *fasthttp.Client {
	return &fasthttp.Client{
		MaxConnsPerHost:          max(conns, 1),
		MaxIdleConnDuration:      30 * time.Second,
		NoDefaultUserAgentHeader: true,
		DisablePathNormalizing:   true,
		MaxResponseBodySize:      1 << 20,
	}
}

// submitOneFast is submitOne through fasthttp.
func submitOneFast(client *fasthttp.Client, url string, timeout time.Duration, t *Task) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(TaskBody(t.Index))
	t.SubmittedAt = time.Now()
	err := client.DoTimeout(req, resp, timeout)
	t.AnsweredAt = time.Now()
	if err != nil {
		t.Err = err.Error()
		return
	}
	t.record(resp.StatusCode(), resp.Body())
}
