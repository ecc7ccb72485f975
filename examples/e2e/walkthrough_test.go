package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The walkthrough's shell blocks are fenced as ```sh with words after the language, which
// renderers ignore and TestWalkthrough obeys:
//
//	(none)                 run once; must exit 0
//	expect=TEXT            ... and print TEXT (URL-escaped: %20 is a space); may be repeated
//	env                    a settings block: run, and its exported variables kept for what follows
//	service=NAME           start in the background (a terminal of its own); a later block with the
//	                       same NAME replaces it, as Ctrl-C and a new command in that terminal would
//	ready=KIND:ARG         wait for the service: http:URL (answers below 500), redis:PORT (PING),
//	                       log:TEXT (its output contains TEXT)
//	norun                  too long to run as written; shortRuns says what the test runs instead
//
// Other fences (```text for sample output) are not run.

// shortRuns are the norun blocks and the shorter commands that exercise them.
var shortRuns = map[string]struct {
	cmd    string
	expect []string
}{
	"env -u REDIS_URL go run ./examples/demo -original": {"env -u REDIS_URL go run ./examples/demo -original -n 3 -progress=false",
		[]string{"each working 1s (TASK_SLEEP=1), worker concurrency 1", "CONSISTENT"}},
}

type block struct {
	line    int
	text    string
	env     bool
	norun   bool
	service string
	ready   string
	expect  []string
}

var fence = regexp.MustCompile("^```sh(\\s.*)?$")

// parseBlocks returns the ```sh blocks of a markdown file.
func parseBlocks(t *testing.T, path string) []block {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []block
	var cur *block
	var body []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if cur != nil {
			if strings.TrimSpace(line) == "```" {
				cur.text = strings.Join(body, "\n")
				out = append(out, *cur)
				cur, body = nil, nil
				continue
			}
			body = append(body, line)
			continue
		}
		m := fence.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		cur = &block{line: n}
		for _, w := range strings.Fields(m[1]) {
			k, v, _ := strings.Cut(w, "=")
			if v, err = url.PathUnescape(v); err != nil {
				t.Fatalf("line %d: %q: %v", n, w, err)
			}
			switch k {
			case "env":
				cur.env = true
			case "norun":
				cur.norun = true
			case "service":
				cur.service = v
			case "ready":
				cur.ready = v
			case "expect":
				cur.expect = append(cur.expect, v)
			default:
				t.Fatalf("line %d: unknown block attribute %q", n, w)
			}
		}
	}
	if cur != nil {
		t.Fatalf("line %d: unterminated block", cur.line)
	}
	return out
}

// workspace makes a directory that looks like the repository to the commands (go.mod, the
// packages and .venv are symlinks) but keeps what they write (callbacks.db,
// submitted_tasks.txt, dump.rdb, receiver.log) out of the tree: examples/python is a copy.
func workspace(t *testing.T, root, venvDir string) string {
	t.Helper()
	ws := t.TempDir()
	link := func(dst, src string) {
		if err := os.Symlink(src, dst); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case "examples", ".venv", ".git":
			continue
		}
		link(filepath.Join(ws, e.Name()), filepath.Join(root, e.Name()))
	}
	link(filepath.Join(ws, ".venv"), venvDir)
	if err := os.MkdirAll(filepath.Join(ws, "examples", "python"), 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err = os.ReadDir(filepath.Join(root, "examples"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "python" {
			link(filepath.Join(ws, "examples", e.Name()), filepath.Join(root, "examples", e.Name()))
		}
	}
	py, err := filepath.Glob(filepath.Join(root, "examples", "python", "*.py"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range py {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ws, "examples", "python", filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ws
}

// portAssign rewrites the walkthrough's well-known ports in settings blocks.
var portAssign = regexp.MustCompile(`\b(REDIS_PORT|API_PORT|RECEIVER_PORT)=\d+`)

// TestWalkthrough runs every shell command of examples/WALKTHROUGH.md as written, in order, on
// free ports: services in the background, one-shot commands to completion with their expected
// output.
func TestWalkthrough(t *testing.T) {
	root := repoRoot(t)
	for _, tool := range []string{"redis-server", "redis-cli", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, "%s not found on PATH; the walkthrough uses it", tool)
		}
	}
	venvDir := venv(t)
	bin(t, "worker") // builds every service once, so the `go run`s below only link
	blocks := parseBlocks(t, filepath.Join(root, "examples", "WALKTHROUGH.md"))
	ws := workspace(t, root, venvDir)
	ports := map[string]int{"REDIS_PORT": freePort(t), "API_PORT": freePort(t), "RECEIVER_PORT": freePort(t)}
	// -trimpath makes the `go run`s reuse what bin compiled, although the workspace is elsewhere.
	env := environ("GOFLAGS=-trimpath")
	services := map[string]*proc{}
	var order []string
	defer func() { // stop in reverse start order, like closing the terminals
		for i := len(order) - 1; i >= 0; i-- {
			if p := services[order[i]]; p != nil {
				p.stop()
			}
		}
	}()

	for _, b := range blocks {
		name := fmt.Sprintf("line %d", b.line)
		switch {
		case b.env:
			text := portAssign.ReplaceAllStringFunc(b.text, func(m string) string {
				k, _, _ := strings.Cut(m, "=")
				return fmt.Sprintf("%s=%d", k, ports[k])
			})
			env = runEnv(t, name, ws, env, text)
		case b.norun:
			short, ok := shortRuns[b.text]
			if !ok {
				t.Fatalf("%s: norun block %q has no entry in shortRuns", name, b.text)
			}
			runOnce(t, name, ws, env, short.cmd, short.expect)
		case b.service != "":
			if old := services[b.service]; old != nil {
				old.stop() // Ctrl-C in that terminal
			} else {
				order = append(order, b.service)
			}
			start := time.Now()
			p := startProc(t, b.service, ws, env, "bash", "-c", b.text)
			services[b.service] = p
			waitReady(t, p, os.Expand(b.ready, lookup(env)))
			t.Logf("%s: %s ready in %.1fs: %s", name, b.service, time.Since(start).Seconds(), b.text)
		default:
			runOnce(t, name, ws, env, b.text, b.expect)
		}
		if t.Failed() {
			return
		}
	}
}

// lookup returns a function giving a variable of env.
func lookup(env []string) func(string) string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

// runEnv runs a settings block and returns the environment it leaves.
func runEnv(t *testing.T, name, dir string, env []string, text string) []string {
	t.Helper()
	cmd := exec.Command("bash", "-e", "-c", text+"\nenv -0")
	cmd.Dir, cmd.Env = dir, env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: settings block failed: %v\n%s\n%s", name, err, text, stderr.String())
	}
	var next []string
	for _, kv := range bytes.Split(bytes.TrimRight(out, "\x00"), []byte{0}) {
		next = append(next, string(kv))
	}
	return next
}

// runOnce runs a command to completion (bounded: 3 minutes) and checks its exit status and output.
func runOnce(t *testing.T, name, dir string, env []string, text string, expect []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", text)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		t.Errorf("%s: %s\nexit: %v\nstdout:\n%s\nstderr:\n%s", name, text, err, tailText(stdout.String(), 40), tailText(stderr.String(), 40))
		return
	}
	for _, e := range expect {
		if !strings.Contains(stdout.String(), e) {
			t.Errorf("%s: %s\nstdout lacks %q:\n%s", name, text, e, tailText(stdout.String(), 40))
			return
		}
	}
	t.Logf("%s: ok in %.1fs: %s\n%s", name, time.Since(start).Seconds(), firstLine(text), abbreviate(stdout.String(), 400))
}

// waitReady waits for a service as its block's ready attribute says (bounded: 2 minutes, which
// covers a `go run` that has to compile).
func waitReady(t *testing.T, p *proc, ready string) {
	t.Helper()
	if ready == "" {
		return
	}
	const timeout = 2 * time.Minute
	kind, arg, _ := strings.Cut(ready, ":")
	switch kind {
	case "http":
		p.waitHTTP(arg, timeout)
	case "log":
		p.waitLog(arg, timeout)
	case "redis":
		deadline := time.Now().Add(timeout)
		for {
			c, err := redis.Dial("tcp", "127.0.0.1:"+arg)
			if err == nil {
				_, err = c.Do("PING")
				c.Close()
				if err == nil {
					return
				}
			}
			if p.exited() || time.Now().After(deadline) {
				t.Fatalf("%s: redis on port %s: %v\n%s", p.name, arg, err, p.tail(20))
			}
			time.Sleep(20 * time.Millisecond)
		}
	default:
		t.Fatalf("%s: unknown ready kind %q", p.name, ready)
	}
}

func abbreviate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + " …"
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func tailText(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
