package rig_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/celerybridge/celerybridge/examples/internal/rig"
)

// The result of tasks.process_task, as the original tasks.py returns it.
func ExampleTaskResult() {
	res := rig.TaskResult("0d9793a1-9c53-4d6e-90bb-ee591fc787b0",
		map[string]any{"task_index": 640, "content": "测试任务640"}, time.Second)
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	// Output:
	// {"business_task_id":"0d9793a1-9c53-4d6e-90bb-ee591fc787b0","data":{"content":"测试任务640","task_index":640},"message":"任务执行完成","process_time":1,"status":"success"}
}

// The services read the variables the Python originals read.
func ExampleConfigFromEnv() {
	env := map[string]string{"REDIS_URL": "redis://10.0.0.5:6379/0", "TASK_SLEEP": "0.5"}
	cfg, err := rig.ConfigFromEnv(func(k string) string { return env[k] })
	if err != nil {
		panic(err)
	}
	fmt.Println(cfg.RedisURL, cfg.ResultsURL(), cfg.TaskSleep, cfg.Concurrency, cfg.Addr(rig.DefaultAPIPort))
	// Output: redis://10.0.0.5:6379/0 redis://10.0.0.5:6379/0 500ms 1 127.0.0.1:8000
}
