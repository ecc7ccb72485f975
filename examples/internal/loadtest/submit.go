package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Task is one submission.
type Task struct {
	Index          int       // task_index, from 1
	BusinessTaskID string    // business_task_id from the answer
	CeleryTaskID   string    // celery_task_id from the answer
	SubmittedAt    time.Time // when the request was sent
	AnsweredAt     time.Time // when the answer arrived
	Err            string    // why it failed; empty when accepted
}

// OK reports whether the API accepted the task.
func (t *Task) OK() bool { return t.Err == "" }

// Submission is the outcome of the submission phase.
type Submission struct {
	Tasks       []Task // by index (Tasks[i].Index == i+1)
	Concurrency int    // submissions in flight at most
	Start       time.Time
	Duration    time.Duration
}

// Accepted returns the accepted tasks in index order.
func (s *Submission) Accepted() []*Task {
	out := make([]*Task, 0, len(s.Tasks))
	for i := range s.Tasks {
		if s.Tasks[i].OK() {
			out = append(out, &s.Tasks[i])
		}
	}
	return out
}

// SubmitSummary is the original's "任务提交统计" block.
type SubmitSummary struct {
	Total             int           `json:"total"`
	Succeeded         int           `json:"succeeded"`
	Failed            int           `json:"failed"`
	Seconds           float64       `json:"seconds"`
	RequestsPerSecond float64       `json:"requests_per_second"`
	Concurrency       int           `json:"concurrency"`
	Errors            []string      `json:"errors,omitempty"` // the first few, "task <i>: <error>"
	Duration          time.Duration `json:"-"`
}

// Summary counts the submissions.
func (s *Submission) Summary() SubmitSummary {
	sum := SubmitSummary{Total: len(s.Tasks), Concurrency: s.Concurrency, Duration: s.Duration, Seconds: s.Duration.Seconds()}
	for i := range s.Tasks {
		if s.Tasks[i].OK() {
			sum.Succeeded++
		} else {
			sum.Failed++
			if len(sum.Errors) < 10 {
				sum.Errors = append(sum.Errors, fmt.Sprintf("task %d: %s", s.Tasks[i].Index, s.Tasks[i].Err))
			}
		}
	}
	if s.Duration > 0 {
		sum.RequestsPerSecond = float64(sum.Total) / s.Duration.Seconds()
	}
	return sum
}

// SubmittedLines returns the original's submitted_tasks.txt: one line
// "task_index,business_task_id,celery_task_id" per accepted task, in index order.
func (s *Submission) SubmittedLines() []byte {
	var b bytes.Buffer
	for _, t := range s.Accepted() {
		fmt.Fprintf(&b, "%d,%s,%s\n", t.Index, t.BusinessTaskID, t.CeleryTaskID)
	}
	return b.Bytes()
}

// submitAnswer is the API's answer to POST /submit-task.
type submitAnswer struct {
	Code           int    `json:"code"`
	Message        string `json:"message"`
	BusinessTaskID string `json:"business_task_id"`
	CeleryTaskID   string `json:"celery_task_id"`
}

// TaskBody is the JSON body of submission i, as the original builds it ("测试任务" is "test task").
func TaskBody(i int) []byte {
	b, _ := json.Marshal(map[string]any{"task_index": i, "content": fmt.Sprintf("测试任务%d", i)})
	return b
}

// NewClient returns an HTTP client that keeps up to conns connections to one host, as a load
// generator needs (Go's default keeps two idle per host and would reconnect for the rest).
func NewClient(conns int) *http.Client {
	if conns < 1 {
		conns = 1
	}
	tr := &http.Transport{
		Proxy:               nil, // loopback services; never through a proxy from the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{Transport: tr}
}

// Submit runs the submission phase of cfg (see Config): N POSTs to /submit-task, at most
// Concurrency at a time. Per-task failures are recorded in the tasks, not returned; the error is
// only for an unusable config or a context that ended before anything was sent.
func Submit(ctx context.Context, cfg Config) (*Submission, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	client := cfg.Client
	var fast *fasthttp.Client
	if client == nil {
		fast = newFastClient(min(cfg.Concurrency, cfg.N))
		defer fast.CloseIdleConnections()
	}
	url := cfg.APIURL + "/submit-task"
	workers := min(cfg.Concurrency, cfg.N)
	sub := &Submission{Tasks: make([]Task, cfg.N), Concurrency: workers}
	for i := range sub.Tasks {
		sub.Tasks[i].Index = i + 1
	}
	bar := newBar(cfg.Progress, cfg.N, "submitting")
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		if cfg.Log == nil {
			return
		}
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(cfg.Log, format, args...)
	}

	// Workers take the next index; with Concurrency = N every request starts at once, like the
	// original's thread per task.
	var next atomic.Int64
	var wg sync.WaitGroup
	sub.Start = time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.N {
					return
				}
				t := &sub.Tasks[i]
				if fast != nil {
					submitOneFast(fast, url, cfg.RequestTimeout, t)
				} else {
					submitOne(ctx, client, url, cfg.RequestTimeout, t)
				}
				if t.OK() {
					logf("submitted task %d: %s\n", t.Index, t.BusinessTaskID)
				} else {
					logf("task %d failed: %s\n", t.Index, t.Err)
				}
				bar.add()
			}
		}()
	}
	wg.Wait()
	sub.Duration = time.Since(sub.Start)
	bar.finish()
	if ctx.Err() != nil && len(sub.Accepted()) == 0 {
		return nil, fmt.Errorf("loadtest: submissions: %w", ctx.Err())
	}
	return sub, nil
}

// submitOne sends one submission and records the outcome in t.
func submitOne(ctx context.Context, client *http.Client, url string, timeout time.Duration, t *Task) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(TaskBody(t.Index)))
	if err != nil {
		t.Err = err.Error()
		return
	}
	req.Header.Set("Content-Type", "application/json")
	t.SubmittedAt = time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Err = err.Error()
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	t.AnsweredAt = time.Now()
	if err != nil {
		t.Err = "read answer: " + err.Error()
		return
	}
	t.record(resp.StatusCode, body)
}

// record takes the API's answer into t: the ids of an accepted task, or why it was not.
func (t *Task) record(status int, body []byte) {
	if status != http.StatusOK {
		t.Err = fmt.Sprintf("status %d: %s", status, abbreviate(string(body), 200))
		return
	}
	var a submitAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Err = "answer is not JSON: " + abbreviate(string(body), 200)
		return
	}
	if a.BusinessTaskID == "" || a.CeleryTaskID == "" {
		t.Err = "answer lacks business_task_id or celery_task_id: " + abbreviate(string(body), 200)
		return
	}
	t.BusinessTaskID, t.CeleryTaskID = a.BusinessTaskID, a.CeleryTaskID
}

func abbreviate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// sortedIDs returns the keys of m in order.
func sortedIDs[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
