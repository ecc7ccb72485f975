package rig

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

func TestConfigSentinelNeedsMasterName(t *testing.T) {
	url := "sentinel://127.0.0.1:26379/0;sentinel://127.0.0.1:26380"
	if _, err := ConfigFromEnv(env{"CELERY_BROKER_URL": url}.get); err == nil || !strings.Contains(err.Error(), "master name") {
		t.Fatalf("sentinel URL without BROKER_MASTER_NAME: err = %v, want a master name error", err)
	}
	cfg, err := ConfigFromEnv(env{"CELERY_BROKER_URL": url, "BROKER_MASTER_NAME": "mymaster",
		"CELERY_RESULT_BACKEND": "sentinel://127.0.0.1:26379/1"}.get)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MasterName != "mymaster" || cfg.resultMasterName() != "mymaster" {
		t.Fatalf("master names %q / %q, want mymaster for both", cfg.MasterName, cfg.resultMasterName())
	}
}

// The API, the worker and the callback dispatcher on sentinel:// URLs: a task goes through, the
// master is SIGKILLed, and a task submitted after the failover goes through too, without a
// restart of any of them.
func TestServicesFollowSentinelFailover(t *testing.T) {
	s := celerytest.StartSentinels(t)
	cfg, err := ConfigFromEnv(env{"CELERY_BROKER_URL": s.URL(0), "CELERY_RESULT_BACKEND": s.URL(1),
		"BROKER_MASTER_NAME": celerytest.SentinelMaster, "TASK_SLEEP": "0", "CALLBACK_DB": ":memory:"}.get)
	if err != nil {
		t.Fatal(err)
	}
	store, _ := startReceiver(t, &cfg)
	deps := testDeps(t, cfg)
	api := newTestAPI(t, cfg, deps)
	startWorker(t, cfg, deps)

	through := func(what string) {
		t.Helper()
		var sub SubmitResponse
		eventually(t, 30*time.Second, func() (bool, string) {
			code, out := call(t, api, "POST", "/submit-task", `{"n": 1}`)
			if code != 200 {
				return false, "submit " + string(out)
			}
			sub = decode[SubmitResponse](t, out)
			return true, ""
		})
		waitStatus(t, api, sub.BusinessTaskID, "SUCCESS")
		eventually(t, 30*time.Second, func() (bool, string) {
			cbs, err := store.ByTaskID(context.Background(), sub.BusinessTaskID)
			return err == nil && len(cbs) > 0, what + ": no callback stored"
		})
	}
	through("before the failover")
	killed := time.Now()
	s.Master.Kill()
	t.Logf("promoted after %v", s.WaitFailover(killed, 30*time.Second))
	through("after the failover")
	t.Logf("recovered: a task went through API, worker and callback %v after the kill", time.Since(killed).Round(time.Millisecond))
}
