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
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The walkthrough's shell blocks are fenced as ```sh with words after the language, which
// renderers ignore and TestWalkthrough obeys:
//
//	terminal=N             the terminal the block is typed into (required): each terminal is its
//	                       own bash, opened at the repository root, keeping only what its own
//	                       blocks set up (the directory they enter, the variables they export, a
//	                       venv they activate), as a person's terminals do
//	terminal=each          a block to paste into every terminal, those open and those opened later
//	(none)                 run once; must exit 0
//	expect=TEXT            ... and print TEXT (URL-escaped: %20 is a space); may be repeated
//	service=NAME           runs in the foreground of its terminal until a later block in the same
//	                       terminal (Ctrl-C, then the next command) or the end of the walkthrough;
//	                       typing into a terminal whose service runs is an error
//	ready=KIND:ARG         wait for the service: http:URL (answers below 500), redis:PORT (PING),
//	                       log:TEXT (its output contains TEXT); $VARS are the terminal's
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
	line     int
	text     string
	terminal string
	norun    bool
	service  string
	ready    string
	expect   []string
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
				if cur.terminal == "" {
					t.Fatalf("line %d: block without terminal=", cur.line)
				}
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
			case "terminal":
				cur.terminal = v
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
var portAssign = regexp.MustCompile(`\b(REDIS_PORT|API_PORT|RECEIVER_PORT|PG_PORT|AMQP_PORT|AMQP_DIST_PORT|EPMD_PORT|AMQP_API_PORT)=\d+`)

// freshEnv is the environment of a newly opened terminal: the developer's, without the rig's
// variables and without any Python venv (VIRTUAL_ENV, a venv's bin on PATH), so a command that
// needs one works only if its terminal activated it.
func freshEnv(venvDir string) []string {
	var env []string
	for _, kv := range environ("GOFLAGS=-trimpath") { // -trimpath: the `go run`s reuse what bin compiled
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX":
			continue
		case "PATH":
			var keep []string
			for _, d := range filepath.SplitList(v) {
				if _, err := os.Stat(filepath.Join(d, "activate")); err == nil || strings.HasPrefix(d, venvDir) {
					continue // a venv's bin
				}
				keep = append(keep, d)
			}
			kv = "PATH=" + strings.Join(keep, string(filepath.ListSeparator))
		}
		env = append(env, kv)
	}
	return env
}

// TestWalkthrough runs every shell command of examples/WALKTHROUGH.md as written, in order, on
// free ports, each in the terminal it names: services in the foreground of theirs, one-shot
// commands to completion with their expected output.
func TestWalkthrough(t *testing.T) {
	root := repoRoot(t)
	for _, tool := range []string{"redis-server", "redis-cli", "curl", "jq", "psql"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, "%s not found on PATH; the walkthrough uses it", tool)
		}
	}
	venvDir := venv(t)
	bin(t, "worker") // builds every service once, so the `go run`s below only link
	blocks := parseBlocks(t, filepath.Join(root, "examples", "WALKTHROUGH.md"))
	ws := workspace(t, root, venvDir)
	if pg, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres"); len(pg) == 0 {
		missing(t, "PostgreSQL is not installed (/usr/lib/postgresql/*/bin; .ci/setup.sh installs it); section 4.5 runs it")
	}
	if _, err := os.Stat("/usr/lib/rabbitmq/bin/rabbitmq-server"); err != nil {
		missing(t, "rabbitmq-server is not installed (/usr/lib/rabbitmq/bin; .ci/setup.sh installs it); section 8 runs it")
	}
	ports := map[string]int{"REDIS_PORT": freePort(t), "API_PORT": freePort(t), "RECEIVER_PORT": freePort(t), "PG_PORT": freePort(t),
		"AMQP_PORT": freePort(t), "AMQP_DIST_PORT": freePort(t), "EPMD_PORT": freePort(t), "AMQP_API_PORT": freePort(t)}
	// Section 4.5's PostgreSQL keeps its data in /tmp/celerybridge-pg-$PG_PORT; drop it after
	// the terminals are closed (the deferred Ctrl-Cs below run before the cleanups).
	t.Cleanup(func() {
		os.RemoveAll(fmt.Sprintf("/tmp/celerybridge-pg-%d", ports["PG_PORT"]))
		os.RemoveAll(fmt.Sprintf("/tmp/celerybridge-rabbitmq-%d", ports["AMQP_PORT"])) // section 8's node
	})
	terms := map[string]*terminal{}
	var opened []*terminal
	var each []block
	defer func() { // Ctrl-C in each terminal, the last opened first
		for i := len(opened) - 1; i >= 0; i-- {
			opened[i].interrupt()
		}
	}()
	open := func(name string) *terminal {
		if tm := terms[name]; tm != nil {
			return tm
		}
		tm := &terminal{t: t, name: name, dir: ws, env: freshEnv(venvDir), state: t.TempDir()}
		terms[name], opened = tm, append(opened, tm)
		for _, b := range each {
			tm.run(b, b.text, nil)
		}
		return tm
	}

	for _, b := range blocks {
		b.text = portAssign.ReplaceAllStringFunc(b.text, func(m string) string {
			k, _, _ := strings.Cut(m, "=")
			return fmt.Sprintf("%s=%d", k, ports[k])
		})
		switch {
		case b.terminal == "each":
			each = append(each, b)
			for _, tm := range opened {
				tm.run(b, b.text, nil)
			}
		case b.norun:
			short, ok := shortRuns[b.text]
			if !ok {
				t.Fatalf("line %d: norun block %q has no entry in shortRuns", b.line, b.text)
			}
			open(b.terminal).run(b, short.cmd, short.expect)
		case b.service != "":
			open(b.terminal).start(b)
		default:
			open(b.terminal).run(b, b.text, b.expect)
		}
		if t.Failed() {
			return
		}
	}
}

// terminal is one of the walkthrough's terminals: the directory and environment its shell is in
// between commands, and the service running in its foreground, if any.
type terminal struct {
	t     *testing.T
	name  string
	dir   string
	env   []string
	state string // where each command's shell leaves its directory and environment
	svc   *proc
	block block // the service's
}

// script wraps a block's text so that the shell records where it ends: its directory and its
// environment, which the terminal's next command starts from.
func (tm *terminal) script(text string) string {
	return fmt.Sprintf("trap 'pwd >%[1]s/cwd; env -0 >%[1]s/env' EXIT\n%[2]s", shellQuote(tm.state), text)
}

// load reads what the last command's shell left.
func (tm *terminal) load(what string) {
	tm.t.Helper()
	cwd, err := os.ReadFile(filepath.Join(tm.state, "cwd"))
	if err != nil {
		tm.t.Fatalf("terminal %s: %s: the shell left no state: %v", tm.name, what, err)
	}
	env, err := os.ReadFile(filepath.Join(tm.state, "env"))
	if err != nil {
		tm.t.Fatalf("terminal %s: %s: the shell left no state: %v", tm.name, what, err)
	}
	tm.dir = strings.TrimSpace(string(cwd))
	tm.env = tm.env[:0]
	for _, kv := range bytes.Split(bytes.TrimRight(env, "\x00"), []byte{0}) {
		switch k, _, _ := strings.Cut(string(kv), "="); k {
		case "_", "SHLVL", "OLDPWD":
			continue
		}
		tm.env = append(tm.env, string(kv))
	}
	os.Remove(filepath.Join(tm.state, "cwd"))
	os.Remove(filepath.Join(tm.state, "env"))
}

// busy fails the test when the terminal's foreground is taken by a service.
func (tm *terminal) busy(b block) bool {
	if tm.svc != nil && !tm.svc.exited() {
		tm.t.Errorf("line %d: typed into terminal %s while %s runs in it; stop it first (Ctrl-C)", b.line, tm.name, tm.block.service)
		return true
	}
	return false
}

// run runs a command to completion in the terminal (bounded: 3 minutes) and checks its exit
// status and output.
func (tm *terminal) run(b block, text string, expect []string) {
	tm.t.Helper()
	if tm.busy(b) {
		return
	}
	name := fmt.Sprintf("line %d (terminal %s)", b.line, tm.name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", tm.script(text))
	cmd.Dir, cmd.Env = tm.dir, tm.env
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	tm.load(name)
	if err != nil {
		tm.t.Errorf("%s: %s\nexit: %v\nstdout:\n%s\nstderr:\n%s", name, text, err, tailText(stdout.String(), 40), tailText(stderr.String(), 40))
		return
	}
	for _, e := range expect {
		if !strings.Contains(stdout.String(), e) {
			tm.t.Errorf("%s: %s\nstdout lacks %q:\n%s", name, text, e, tailText(stdout.String(), 40))
			return
		}
	}
	tm.t.Logf("%s: ok in %.1fs: %s\n%s", name, time.Since(start).Seconds(), firstLine(text), abbreviate(stdout.String(), 400))
}

// start stops the terminal's service, if one runs (Ctrl-C), and starts the block's in its
// foreground.
func (tm *terminal) start(b block) {
	tm.t.Helper()
	tm.interrupt()
	start := time.Now()
	// The shell ignores Ctrl-C itself, as an interactive one does, and goes on after the
	// foreground command ends, so the directory and variables it leaves are recorded.
	p := startProc(tm.t, b.service, tm.dir, tm.env, "bash", "-e", "-c", "trap : INT TERM\n"+tm.script(b.text))
	tm.svc, tm.block = p, b
	waitReady(tm.t, p, os.Expand(b.ready, lookup(tm.env)))
	tm.t.Logf("line %d (terminal %s): %s ready in %.1fs: %s", b.line, tm.name, b.service, time.Since(start).Seconds(), b.text)
}

// interrupt is Ctrl-C in the terminal: SIGINT to its foreground processes, then waiting for all
// of them to end (bounded: 20 s, after which they are killed and the test fails).
func (tm *terminal) interrupt() {
	tm.t.Helper()
	p := tm.svc
	if p == nil {
		return
	}
	tm.svc = nil
	pgid := p.cmd.Process.Pid
	p.signal(syscall.SIGINT)
	deadline := time.Now().Add(20 * time.Second)
	for syscall.Kill(-pgid, 0) == nil || !p.exited() {
		if time.Now().After(deadline) {
			tm.t.Errorf("terminal %s: %s did not stop within 20 s of Ctrl-C:\n%s", tm.name, tm.block.service, p.tail(20))
			p.kill()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tm.load(fmt.Sprintf("line %d", tm.block.line))
}

// shellQuote quotes s for bash.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// lookup returns a function giving a variable of env.
func lookup(env []string) func(string) string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
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
