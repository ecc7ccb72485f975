package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ReceiverSource reads the Go callback receiver (examples/callback_receiver, or the demo's):
// GET <URL>/callbacks/stats for running totals and GET <URL>/callbacks/{task_id} for the
// callbacks stored for one task. It works for any receiver with those two endpoints. It is safe
// for concurrent use.
type ReceiverSource struct {
	// URL is the receiver's base URL, e.g. "http://127.0.0.1:8001".
	URL string
	// Client sends the queries. nil: a small client of its own.
	Client *http.Client
	// Concurrency bounds the lookups in flight. Default 16.
	Concurrency int

	once   sync.Once
	client *http.Client
}

func (s *ReceiverSource) init() {
	s.once.Do(func() {
		s.URL = strings.TrimRight(s.URL, "/")
		s.client = s.Client
		if s.client == nil {
			s.client = NewClient(16)
		}
		if s.Concurrency <= 0 {
			s.Concurrency = 16
		}
	})
}

// Describe implements Source.
func (s *ReceiverSource) Describe() string {
	s.init()
	return "receiver store at " + s.URL + " (GET /callbacks/stats, GET /callbacks/{task_id})"
}

// Stats implements StatsSource.
func (s *ReceiverSource) Stats(ctx context.Context) (SourceStats, error) {
	s.init()
	var st SourceStats
	body, status, err := s.get(ctx, s.URL+"/callbacks/stats")
	if err != nil {
		return st, err
	}
	if status != http.StatusOK {
		return st, fmt.Errorf("loadtest: GET /callbacks/stats: status %d: %s", status, abbreviate(string(body), 200))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("loadtest: GET /callbacks/stats: %w", err)
	}
	return st, nil
}

// Lookup implements Source: one GET /callbacks/{id} per id, Concurrency at a time. A 404 or an
// empty list means no callback yet.
func (s *ReceiverSource) Lookup(ctx context.Context, ids []string) (map[string]Observed, error) {
	s.init()
	out := make(map[string]Observed, len(ids))
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	sem := make(chan struct{}, s.Concurrency)
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			o, ok, err := s.lookupOne(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if ok {
				out[id] = o
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

func (s *ReceiverSource) lookupOne(ctx context.Context, id string) (Observed, bool, error) {
	body, status, err := s.get(ctx, s.URL+"/callbacks/"+url.PathEscape(id))
	if err != nil {
		return Observed{}, false, err
	}
	switch status {
	case http.StatusOK:
	case http.StatusNotFound:
		return Observed{}, false, nil
	default:
		return Observed{}, false, fmt.Errorf("loadtest: GET /callbacks/%s: status %d: %s", id, status, abbreviate(string(body), 200))
	}
	cbs, err := decodeCallbacks(body)
	if err != nil {
		return Observed{}, false, fmt.Errorf("loadtest: GET /callbacks/%s: %w", id, err)
	}
	if len(cbs) == 0 {
		return Observed{}, false, nil
	}
	o := Observed{Callbacks: len(cbs)}
	for _, cb := range cbs {
		o.Statuses = append(o.Statuses, cb.Status)
		if !cb.ReceivedAt.IsZero() && (o.FirstAt.IsZero() || cb.ReceivedAt.Before(o.FirstAt)) {
			o.FirstAt = cb.ReceivedAt
		}
	}
	return o, true, nil
}

// storedCallback is the part of a stored callback the report needs.
type storedCallback struct {
	TaskID     string    `json:"task_id"`
	Status     string    `json:"status"`
	ReceivedAt time.Time `json:"received_at"`
}

// decodeCallbacks reads GET /callbacks/{id}: a JSON list of callbacks, or an object holding it
// under "callbacks".
func decodeCallbacks(body []byte) ([]storedCallback, error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		var list []storedCallback
		err := json.Unmarshal(body, &list)
		return list, err
	}
	var obj struct {
		Callbacks []storedCallback `json:"callbacks"`
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		return nil, err
	}
	return obj.Callbacks, nil
}

func (s *ReceiverSource) get(ctx context.Context, u string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return body, resp.StatusCode, err
}

// LogSource reads a receiver's log file, for receivers that keep no queryable store: the
// original Python callback_receiver.py prints one line per callback
// ("【回调接收】任务 <task_id>，状态：<status>，数据：{...}") and nothing else. Every line that
// names a task id counts as one callback for it (a task named twice on one line counts once);
// two lines for one id are a duplicate, since that receiver does not dedupe. FirstAt is when
// Lookup first read the line, so latencies are as fine as the poll interval. Run the receiver
// with PYTHONUNBUFFERED=1, or its prints reach the file in 4 KiB blocks. It is safe for
// concurrent use.
type LogSource struct {
	// Path is the log file (the receiver's stdout).
	Path string
	// Match, when set, keeps only lines containing it (e.g. "回调接收").
	Match string

	mu     sync.Mutex
	offset int64
	rest   []byte
	seen   map[string]*Observed
}

// uuidPattern finds the ids the APIs hand out (uuid4, lowercase with dashes).
var uuidPattern = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)

// statusPattern finds the callback's status in the Python receiver's line (the outer dict's
// 'status' comes first) or in a JSON dump.
var statusPattern = regexp.MustCompile(`['"]status['"]\s*:\s*['"](\w+)['"]`)

// Describe implements Source.
func (s *LogSource) Describe() string { return "receiver log " + s.Path }

// Lookup implements Source: it reads what was appended to the log since the last call.
func (s *LogSource) Lookup(ctx context.Context, ids []string) (map[string]Observed, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]*Observed{}
	}
	if err := s.readNew(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	out := make(map[string]Observed, len(ids))
	for _, id := range ids {
		if o, ok := s.seen[id]; ok {
			out[id] = *o
		}
	}
	return out, nil
}

func (s *LogSource) readNew() error {
	f, err := os.Open(s.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(s.offset, io.SeekStart); err != nil {
		return err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	s.offset += int64(len(data))
	data = append(s.rest, data...)
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		s.rest = data
		return nil
	}
	s.rest = append([]byte(nil), data[end+1:]...)
	now := time.Now()
	for line := range bytes.Lines(data[:end+1]) {
		if s.Match != "" && !bytes.Contains(line, []byte(s.Match)) {
			continue
		}
		status := ""
		if m := statusPattern.FindSubmatch(line); m != nil {
			status = string(m[1])
		}
		onLine := map[string]bool{}
		for _, id := range uuidPattern.FindAll(line, -1) {
			k := strings.ToLower(string(id))
			if onLine[k] {
				continue
			}
			onLine[k] = true
			o := s.seen[k]
			if o == nil {
				o = &Observed{FirstAt: now}
				s.seen[k] = o
			}
			o.Callbacks++
			if status != "" {
				o.Statuses = append(o.Statuses, status)
			}
		}
	}
	return nil
}
