package celerytest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Peer names a Python Celery installation used as an interop peer.
type Peer string

const (
	// CeleryNew is Celery from PyPI, pinned in examples/python/requirements.txt, in the project
	// venv (.venv at the repo root, or CELERYBRIDGE_VENV).
	CeleryNew Peer = "new"
	// CeleryOld is Debian's python3-celery 5.2.6 run by /usr/bin/python3 (or CELERYBRIDGE_PYTHON_OLD).
	CeleryOld Peer = "old"
)

// Peers lists both Celery versions, for table-driven interop tests.
var Peers = []Peer{CeleryNew, CeleryOld}

var (
	versionMu    sync.Mutex
	versionCache = map[string]string{}
)

// Python returns the interpreter for peer and the Celery version it imports. It skips (fails in
// CI) when the interpreter or its Celery is missing.
func Python(t testing.TB, peer Peer) (python, celeryVersion string) {
	t.Helper()
	switch peer {
	case CeleryNew:
		venv := os.Getenv("CELERYBRIDGE_VENV")
		if venv == "" {
			venv = filepath.Join(RepoRoot(t), ".venv")
		}
		python = filepath.Join(venv, "bin", "python")
	case CeleryOld:
		python = os.Getenv("CELERYBRIDGE_PYTHON_OLD")
		if python == "" {
			python = "/usr/bin/python3"
		}
	default:
		t.Fatalf("testenv: unknown peer %q", peer)
	}
	versionMu.Lock()
	defer versionMu.Unlock()
	if v, ok := versionCache[python]; ok {
		if v == "" {
			Missing(t, "%s cannot import celery", python)
		}
		return python, v
	}
	out, err := exec.Command(python, "-c", "import celery, redis; print(celery.__version__)").Output()
	v := strings.TrimSpace(string(out))
	if err != nil {
		v = ""
	}
	versionCache[python] = v
	if v == "" {
		Missing(t, "%s cannot import celery and redis: %v", python, err)
	}
	if peer == CeleryOld && !strings.HasPrefix(v, "5.2.") {
		t.Fatalf("testenv: old peer %s has celery %s, want Debian's 5.2.x", python, v)
	}
	return python, v
}

// PythonDir is the directory with the Python helpers used by interop tests (testdata/python).
func PythonDir(t testing.TB) string { return filepath.Join(RepoRoot(t), "testdata", "python") }

// RunPython runs a Python script file (relative to testdata/python, or absolute) with args and
// extra environment, failing the test on a non-zero exit. It returns stdout.
func RunPython(t testing.TB, peer Peer, env []string, timeout time.Duration, script string, args ...string) []byte {
	t.Helper()
	out, err := RunPythonErr(t, peer, env, timeout, script, args...)
	if err != nil {
		t.Fatalf("testenv: python %s %v: %v\n%s", script, args, err, out)
	}
	return out
}

// RunPythonErr is RunPython that returns the error (stdout and stderr combined in the output on error).
func RunPythonErr(t testing.TB, peer Peer, env []string, timeout time.Duration, script string, args ...string) ([]byte, error) {
	t.Helper()
	py, _ := Python(t, peer)
	cmd := PythonCmd(t, peer, env, script, args...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd2 := exec.CommandContext(ctx, py, cmd.Args[1:]...)
	cmd2.Env, cmd2.Dir = cmd.Env, cmd.Dir
	// A child the script left behind (a prefork pool process, say) may hold stdout open after the
	// script is killed at the timeout; do not wait for it forever.
	cmd2.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd2.Stdout, cmd2.Stderr = &stdout, &stderr
	if err := cmd2.Run(); err != nil {
		return append(stdout.Bytes(), stderr.Bytes()...), err
	}
	return stdout.Bytes(), nil
}

// PythonCmd builds (but does not start) a command running script under peer's interpreter, with
// testdata/python on PYTHONPATH and as the working directory.
func PythonCmd(t testing.TB, peer Peer, env []string, script string, args ...string) *exec.Cmd {
	t.Helper()
	py, _ := Python(t, peer)
	dir := PythonDir(t)
	if !filepath.IsAbs(script) {
		script = filepath.Join(dir, script)
	}
	cmd := exec.Command(py, append([]string{script}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir, "PYTHONUNBUFFERED=1")
	cmd.Env = append(cmd.Env, env...)
	return cmd
}
