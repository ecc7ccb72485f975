package rig

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/celerycompat"
	"github.com/google/go-cmp/cmp"
)

// TestTaskResultShape pins the result to the original tasks.py's dict, key for key.
func TestTaskResultShape(t *testing.T) {
	data := map[string]any{"task_index": 640, "content": "测试任务640"}
	want := map[string]any{
		"status":           "success",
		"business_task_id": "0d9793a1-9c53-4d6e-90bb-ee591fc787b0",
		"data":             data,
		"message":          "任务执行完成",
		"process_time":     1.0,
	}
	if diff := cmp.Diff(want, TaskResult("0d9793a1-9c53-4d6e-90bb-ee591fc787b0", data, time.Second)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestTaskProcess(t *testing.T) {
	var slept []time.Duration
	tk := &task{sleep: 1500 * time.Millisecond, failEvery: 3, wait: func(_ context.Context, d time.Duration) error {
		slept = append(slept, d)
		return nil
	}}
	req := &celerycompat.Request{ID: "c", Task: TaskName}
	tests := []struct {
		data    any
		wantErr string
	}{
		{map[string]any{"n": 1}, ""},
		{map[string]any{"fail": true}, "simulated failure: data.fail is true"},
		{map[string]any{"n": 3}, "simulated failure: task 3 of every 3 fails (FAIL_EVERY)"},
		{map[string]any{"fail": "yes"}, ""}, // only the JSON true fails
		{[]any{"not", "a", "dict"}, ""},     // Python does not check the hint either
	}
	for i, tt := range tests {
		got, err := tk.process(context.Background(), req, TaskArgs{TaskID: "b", Data: tt.data})
		if tt.wantErr != "" {
			var te *celerycompat.TaskError
			if !errors.As(err, &te) || te.ExcType != "ValueError" || te.ExcModule != "builtins" || te.Message() != tt.wantErr {
				t.Errorf("task %d: error %v, want ValueError(%q)", i+1, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("task %d: %v", i+1, err)
		} else if diff := cmp.Diff(TaskResult("b", tt.data, 1500*time.Millisecond), got); diff != "" {
			t.Errorf("task %d (-want +got):\n%s", i+1, diff)
		}
	}
	if len(slept) != len(tests) || slept[0] != 1500*time.Millisecond {
		t.Errorf("slept %v", slept)
	}
}

// TestSleepHonoursContext: a task sleeping TASK_SLEEP gives up when the worker's shutdown
// timeout cancels it.
func TestSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tk := &task{sleep: time.Hour, wait: sleepCtx}
	if _, err := tk.process(ctx, &celerycompat.Request{}, TaskArgs{}); !errors.Is(err, context.Canceled) {
		t.Errorf("process with a cancelled context: %v", err)
	}
	if err := sleepCtx(context.Background(), 0); err != nil {
		t.Errorf("sleepCtx(0): %v", err)
	}
}

func TestNewWorkerChecks(t *testing.T) {
	cfg, err := ConfigFromEnv(env{}.get)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewWorker(context.Background(), cfg, Deps{}); err == nil {
		t.Error("NewWorker without a pool: no error")
	}
	if _, err := NewAPI(cfg, Deps{}); err == nil {
		t.Error("NewAPI without a pool: no error")
	}
}
