package celerytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Flower is a real Flower (the Celery 5.7.0 venv's), for tests of what Celery's monitoring tool
// sees of Go workers.
type Flower struct {
	t    testing.TB
	base string
}

// StartFlower runs Flower on a free loopback port against brokerURL and backendURL
// ("disabled://" for none) and returns once it answers HTTP. It is killed when the test ends, and
// its log is printed if the test failed. A venv without flower is Missing.
func StartFlower(t testing.TB, brokerURL, backendURL string) *Flower {
	t.Helper()
	py, _ := Python(t, CeleryNew)
	if err := exec.Command(py, "-c", "import flower").Run(); err != nil {
		Missing(t, "%s cannot import flower: %v", py, err)
	}
	port := FreePort(t)
	f := &Flower{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	logPath := filepath.Join(t.TempDir(), "flower.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-m", "celery", "-A", "capapp", "flower", fmt.Sprintf("--port=%d", port), "--address=127.0.0.1")
	cmd.Dir = PythonDir(t)
	cmd.Env = append(cmd.Environ(), "PYTHONPATH="+cmd.Dir, "BROKER_URL="+brokerURL, "BACKEND_URL="+backendURL,
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
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("flower exited:\n%s", b)
		default:
		}
		var v any
		if f.Get("/api/workers?status=true", &v) == nil {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatal("flower did not answer HTTP within 60 s")
		}
	}
}

// Get GETs path from Flower's HTTP API and decodes the JSON body into dst.
func (f *Flower) Get(path string, dst any) error {
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

// Poll GETs path until cond holds on the decoded JSON object and returns it; after timeout it
// fails the test with what it waited for and the last body.
func (f *Flower) Poll(path string, timeout time.Duration, what string, cond func(v map[string]any) bool) map[string]any {
	f.t.Helper()
	var last map[string]any
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		last = nil
		if f.Get(path, &last) == nil && cond(last) {
			return last
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out after %v waiting for %s; last %s: %v", timeout, what, path, last)
		}
	}
}
