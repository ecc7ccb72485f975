package gocelery_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// One Redis database for broker and results, as gocelery's README uses one pool for both.
func pyEnv(r *celerytest.Redis) []string {
	return []string{"BROKER_URL=" + r.URL(0), "BACKEND_URL=" + r.URL(0)}
}

// pySend publishes with the real Celery producer (apply_async / send_task) and returns the ids.
func pySend(t *testing.T, peer celerytest.Peer, r *celerytest.Redis, specs any) []string {
	t.Helper()
	raw, err := json.Marshal(specs)
	if err != nil {
		t.Fatal(err)
	}
	out := celerytest.RunPython(t, peer, pyEnv(r), time.Minute, "send.py", "--spec", string(raw))
	var sent struct {
		IDs []string `json:"ids"`
	}
	if err := json.Unmarshal(out, &sent); err != nil {
		t.Fatalf("send.py printed %q: %v", out, err)
	}
	return sent.IDs
}

type pyResult struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Result    any    `json:"result"`
	Traceback string `json:"traceback"`
	TimedOut  bool   `json:"timed_out"`
	Exc       *struct {
		Type string `json:"type"`
		Args []any  `json:"args"`
	} `json:"exc"`
}

// pyGet reads results with Python's AsyncResult(id).get(), which returns only on the PUBLISH.
func pyGet(t *testing.T, peer celerytest.Peer, r *celerytest.Redis, timeout time.Duration, ids ...string) map[string]pyResult {
	t.Helper()
	args := append([]string{"--timeout", fmt.Sprint(timeout.Seconds())}, ids...)
	out := celerytest.RunPython(t, peer, pyEnv(r), time.Minute+timeout*time.Duration(len(ids)), "get_result.py", args...)
	var got struct {
		Results []pyResult `json:"results"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("get_result.py printed %q: %v", out, err)
	}
	m := map[string]pyResult{}
	for _, res := range got.Results {
		m[res.ID] = res
	}
	return m
}
