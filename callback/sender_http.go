package callback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultTimeout bounds one callback request, as the original handler's requests timeout.
const DefaultTimeout = 10 * time.Second

// DefaultUserAgent is sent with every callback request unless configured otherwise.
const DefaultUserAgent = "celerybridge-callback/1"

// maxResponseRead is how much of a response body is read (and discarded) so the connection can
// be reused; snippetLen is how much of it is kept for a failure's last error.
const (
	maxResponseRead = 64 << 10
	snippetLen      = 256
)

// poster sends one callback request.
type poster interface {
	// send POSTs body to url with the callback headers. A non-nil error means no response
	// was received (network error, timeout, aborted).
	send(ctx context.Context, url, eventID string, body []byte) (sendResult, error)
	// abort fails the requests in flight; it is called when the dispatcher's shutdown times out.
	abort()
	// closeIdle closes idle connections once the dispatcher stops.
	closeIdle()
}

// wire is what every attempt sends besides its body, and how an answer is read: the one
// definition of the wire format, shared by both senders.
type wire struct {
	sig       *signer // nil: unsigned
	timeout   time.Duration
	userAgent string
	clock     func() time.Time
}

func newWire(secret []byte, timeout time.Duration, userAgent string, clock func() time.Time) wire {
	w := wire{timeout: timeout, userAgent: userAgent, clock: clock}
	if len(secret) > 0 {
		w.sig = newSigner(secret)
	}
	return w
}

// headers calls set for each header of one attempt at delivering body as eventID.
func (w wire) headers(eventID string, body []byte, set func(name, value string)) {
	set("Content-Type", "application/json")
	set(HeaderIdempotencyKey, eventID)
	set("User-Agent", w.userAgent)
	if w.sig != nil {
		ts := w.clock().Unix()
		set(HeaderTimestamp, strconv.FormatInt(ts, 10))
		set(HeaderSignature, w.sig.sign(ts, body))
	}
}

// result reads an answer: its status, its Retry-After header, and, only for a status that is
// not 2xx, the start of its body (head returns up to snippetLen bytes of it).
func (w wire) result(status int, retryAfter string, head func() []byte) sendResult {
	res := sendResult{status: status}
	res.retryAfter, res.hasRetry = parseRetryAfter(retryAfter, w.clock())
	if status < 200 || status > 299 {
		res.snippet = cleanSnippet(head())
	}
	return res
}

// httpSender POSTs callback bodies through a net/http Client (DispatcherConfig.Client). It is
// safe for concurrent use.
type httpSender struct {
	wire
	client       *http.Client
	ownTransport bool // the transport was built here, so its idle connections are ours to close
}

// sendResult is what came back from one request.
type sendResult struct {
	status     int
	retryAfter time.Duration
	hasRetry   bool   // Retry-After was present and usable
	snippet    string // start of the body, for errors
}

// newHTTPSender copies client (or builds one) so that redirects are never followed: a redirect
// would lead past the allow-list.
func newHTTPSender(client *http.Client, concurrency int, secret []byte, timeout time.Duration, userAgent string, clock func() time.Time) *httpSender {
	var c http.Client
	own := client == nil
	if !own {
		c = *client
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = 0
		tr.MaxIdleConnsPerHost = concurrency
		c.Transport = tr
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &httpSender{wire: newWire(secret, timeout, userAgent, clock), client: &c, ownTransport: own}
}

// abort: in-flight requests end with their context, which the dispatcher cancels.
func (s *httpSender) abort() {}

func (s *httpSender) closeIdle() {
	if s.ownTransport {
		s.client.CloseIdleConnections()
	}
}

// send POSTs body to url with the callback headers. A non-nil error means no response was
// received (network error, timeout, cancelled).
func (s *httpSender) send(ctx context.Context, url, eventID string, body []byte) (sendResult, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return sendResult{}, fmt.Errorf("build request: %w", err)
	}
	s.headers(eventID, body, req.Header.Set)
	resp, err := s.client.Do(req)
	if err != nil {
		return sendResult{}, describeSendError(ctx, err, s.timeout)
	}
	defer resp.Body.Close()
	res := s.result(resp.StatusCode, resp.Header.Get("Retry-After"), func() []byte {
		head := make([]byte, snippetLen)
		n, _ := io.ReadFull(resp.Body, head)
		return head[:n]
	})
	// Drain a bounded amount so the connection can go back to the pool; a read error here
	// does not change the outcome, which the status already decided.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseRead))
	return res, nil
}

// describeSendError turns a client error into a short, stable message.
func describeSendError(ctx context.Context, err error, timeout time.Duration) error {
	var ne net.Error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return fmt.Errorf("timeout after %v: %w", timeout, err)
	default:
		return err
	}
}

// cleanSnippet makes a response body prefix safe to store and log.
func cleanSnippet(b []byte) string {
	s := strings.ToValidUTF8(string(b), string(utf8.RuneError))
	return strings.Join(strings.Fields(s), " ")
}
