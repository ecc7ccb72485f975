package callback_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/celerybridge/celerybridge/callback"
	"github.com/celerybridge/celerybridge/callback/storetest"
)

func TestMemoryStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) callback.Store { return callback.NewMemoryStore() })
}

// TestCallbackDoesNotCompileSQLite: importing package callback (a worker that only sends
// callbacks) builds no SQLite driver; the store packages bring their databases with them.
func TestCallbackDoesNotCompileSQLite(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/celerybridge/celerybridge/callback").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || !strings.Contains(string(out), "github.com/gomodule/redigo") {
		t.Fatalf("go list -deps listed %d packages, not the callback package's dependencies:\n%s", len(deps), out)
	}
	for _, dep := range deps {
		if strings.Contains(strings.ToLower(dep), "sqlite") || strings.Contains(dep, "jackc/pgx") {
			t.Errorf("package callback depends on %s", dep)
		}
	}
}
