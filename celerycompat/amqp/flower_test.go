package amqp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// flower is a real Flower (the venv's) watching a vhost.
type flower struct {
	t    *testing.T
	base string
}

func startFlower(t *testing.T, brokerURL string) *flower {
	t.Helper()
	py, _ := celerytest.Python(t, celerytest.CeleryNew)
	if err := exec.Command(py, "-c", "import flower").Run(); err != nil {
		celerytest.Missing(t, "%s cannot import flower: %v", py, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	f := &flower{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	logPath := filepath.Join(t.TempDir(), "flower.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-m", "celery", "-A", "capapp", "flower", fmt.Sprintf("--port=%d", port), "--address=127.0.0.1")
	cmd.Dir = celerytest.PythonDir(t)
	cmd.Env = append(cmd.Environ(), "PYTHONPATH="+cmd.Dir, "BROKER_URL="+brokerURL, "BACKEND_URL=disabled://",
		"FLOWER_UNAUTHENTICATED_API=true")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("flower log:\n%s", b)
		}
	})
	eventually(t, 60*time.Second, "flower answering HTTP", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("flower exited:\n%s", b)
		default:
		}
		var v any
		return f.tryGet("/api/workers?status=true", &v) == nil
	})
	return f
}

func (f *flower) tryGet(path string, dst any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.Unmarshal(body, dst)
}

// poll GETs path until cond holds on the decoded JSON, failing after timeout.
func (f *flower) poll(path string, timeout time.Duration, what string, cond func(v map[string]any) bool) map[string]any {
	f.t.Helper()
	var last map[string]any
	eventually(f.t, timeout, what, func() bool {
		last = nil
		return f.tryGet(path, &last) == nil && cond(last)
	})
	return last
}
