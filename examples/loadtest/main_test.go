package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		name              string
		env               func(string) string
		receiver, results string
	}{
		{"none", envOf(), "http://127.0.0.1:8001", "redis://127.0.0.1:6379/0"},
		{"callback url", envOf("CALLBACK_URL", "http://10.0.0.2:9001/receive-task-result", "REDIS_URL", "redis://r:1/3"),
			"http://10.0.0.2:9001", "redis://r:1/3"},
		{"explicit", envOf("RECEIVER_URL", "http://x:1", "CALLBACK_URL", "http://y:2/cb", "REDIS_URL", "redis://r/0", "CELERY_RESULT_BACKEND", "redis://b/1"),
			"http://x:1", "redis://b/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := receiverDefault(tt.env); got != tt.receiver {
				t.Errorf("receiver %q, want %q", got, tt.receiver)
			}
			if got := resultsDefault(tt.env); got != tt.results {
				t.Errorf("results %q, want %q", got, tt.results)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"-n", "0"}, {"-nope"}, {"extra"}} {
		var out, errOut strings.Builder
		if code := run(args, envOf(), &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errOut.String())
		}
	}
}

// TestSubmitOnly runs the submission phase against a stub API, its URL given the way
// test_batch_submit.py takes it (with /submit-task).
func TestSubmitOnly(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/submit-task" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		i := n.Add(1)
		fmt.Fprintf(w, `{"code":200,"message":"ok","business_task_id":"b%d","celery_task_id":"c%d"}`, i, i)
	}))
	defer srv.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "submitted_tasks.txt")
	var stdout, stderr strings.Builder
	code := run([]string{"-n", "50", "-concurrency", "5", "-submit-only", "-no-progress", "-out", out, "-json", filepath.Join(dir, "r.json")},
		envOf("API_URL", srv.URL+"/submit-task"), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "succeeded:    50") || strings.Contains(stdout.String(), "consistency") {
		t.Errorf("output:\n%s", stdout.String())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(raw), "\n"); got != 50 || !strings.HasPrefix(string(raw), "1,b") {
		t.Errorf("submitted_tasks.txt:\n%s", raw)
	}
	if _, err := os.Stat(filepath.Join(dir, "r.json")); err != nil {
		t.Error(err)
	}
}
