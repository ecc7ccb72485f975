package celerytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// RabbitMQ is a private rabbitmq-server node (Debian's rabbitmq-server package, installed by
// .ci/setup.sh) on loopback ports, with its data, logs, config, Erlang cookie and epmd of its own:
// it never touches a system node on 5672/4369 or another test binary's node.
//
// A node takes seconds to boot, so the tests of one test binary share one node
// (SharedRabbitMQ) and isolate themselves with a virtual host each (VHost). StartRabbitMQ gives a
// test a node of its own when it must stop or restart the broker.
//
// The node is run by a small shell watchdog that reads its stdin, a pipe this process holds: when
// the test binary exits for any reason (even SIGKILL) the pipe closes and the watchdog stops the
// node gracefully and kills its epmd, so no node outlives its tests.
//
// Methods are safe for concurrent use.
type RabbitMQ struct {
	Port     int    // AMQP listener on 127.0.0.1
	DistPort int    // Erlang distribution listener on 127.0.0.1
	EPMDPort int    // the node's private epmd (ERL_EPMD_PORT)
	Node     string // Erlang node name, e.g. cbtest-1234-1@localhost
	// StartTime is how long the last start took, from exec to a node that accepts AMQP.
	StartTime time.Duration

	bin, ctl, epmd string
	dir            string // holds home/ (cookie), mnesia/, log/, rabbitmq.conf

	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser // closing it stops the node
	exited chan struct{}  // closed when cmd has been waited for
	vhosts atomic.Int64
}

// rabbitSerial numbers the nodes this process starts, for unique node names.
var rabbitSerial atomic.Int64

// shared is the test binary's node for SharedRabbitMQ.
var shared struct {
	mu   sync.Mutex
	node *RabbitMQ
	err  error // why it could not start (sticky: one failed boot is enough)
}

// rabbitBinDir is where Debian installs the real scripts (those in /usr/sbin switch to the
// rabbitmq user and its system node's data; these run as the caller with our environment).
const rabbitBinDir = "/usr/lib/rabbitmq/bin"

// findRabbitMQ locates rabbitmq-server, rabbitmqctl and epmd: CELERYBRIDGE_RABBITMQ_BIN (a
// directory with both scripts), Debian's /usr/lib/rabbitmq/bin, or PATH.
func findRabbitMQ() (server, ctl, epmd string, err error) {
	dirs := []string{os.Getenv("CELERYBRIDGE_RABBITMQ_BIN"), rabbitBinDir}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		s, c := filepath.Join(d, "rabbitmq-server"), filepath.Join(d, "rabbitmqctl")
		if isExecutable(s) && isExecutable(c) {
			server, ctl = s, c
			break
		}
	}
	if server == "" {
		if server, err = exec.LookPath("rabbitmq-server"); err != nil {
			return "", "", "", fmt.Errorf("rabbitmq-server is neither in %s nor on PATH", rabbitBinDir)
		}
		if ctl, err = exec.LookPath("rabbitmqctl"); err != nil {
			return "", "", "", fmt.Errorf("rabbitmqctl not found on PATH: %w", err)
		}
	}
	for _, p := range []string{"/usr/lib/erlang/bin/epmd", "/usr/bin/epmd"} {
		if isExecutable(p) {
			return server, ctl, p, nil
		}
	}
	if epmd, err = exec.LookPath("epmd"); err != nil {
		return "", "", "", fmt.Errorf("epmd (erlang-base) not found: %w", err)
	}
	return server, ctl, epmd, nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// SharedRabbitMQ returns the node shared by the tests of this test binary, starting it on first
// use. It skips the test (fails it under CI=true) when rabbitmq-server is not installed or does
// not start. Stop it with StopSharedRabbitMQ from TestMain after m.Run; without that the watchdog
// stops it when the test binary exits.
func SharedRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.node == nil && shared.err == nil {
		r, err := newRabbitMQ()
		if err == nil {
			err = r.start()
		}
		if err != nil {
			shared.err = err
			if r != nil {
				_ = os.RemoveAll(r.dir)
			}
		} else {
			shared.node = r
		}
	}
	if shared.err != nil {
		Missing(t, "rabbitmq-server: %v", shared.err)
	}
	return shared.node
}

// StopSharedRabbitMQ stops the shared node, if one was started, and removes its files. Call it
// from TestMain after m.Run.
func StopSharedRabbitMQ() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.node != nil {
		_ = shared.node.Stop()
		_ = os.RemoveAll(shared.node.dir)
		shared.node = nil
	}
}

// StartRabbitMQ starts a node owned by one test (for tests that stop, restart or break the
// broker) and stops it when the test ends. Prefer SharedRabbitMQ plus VHost otherwise.
func StartRabbitMQ(t testing.TB) *RabbitMQ {
	t.Helper()
	r, err := newRabbitMQ()
	if err != nil {
		Missing(t, "rabbitmq-server: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Logf("testenv: stop rabbitmq node %s: %v", r.Node, err)
		}
		_ = os.RemoveAll(r.dir)
	})
	if err := r.start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return r
}

// newRabbitMQ prepares the directory, cookie and ports of a node without starting it.
func newRabbitMQ() (*RabbitMQ, error) {
	server, ctl, epmd, err := findRabbitMQ()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "celerytest-rabbitmq-")
	if err != nil {
		return nil, err
	}
	r := &RabbitMQ{bin: server, ctl: ctl, epmd: epmd, dir: dir,
		Node: fmt.Sprintf("cbtest-%d-%d@localhost", os.Getpid(), rabbitSerial.Add(1))}
	if err := r.prepare(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return r, nil
}

// prepare writes the cookie and plugin list and picks the ports.
func (r *RabbitMQ) prepare() error {
	dir := r.dir
	if err := os.MkdirAll(filepath.Join(dir, "home"), 0o700); err != nil {
		return err
	}
	// The cookie lets rabbitmqctl (same HOME) talk to the node; Erlang insists on mode 0400.
	cookie := fmt.Sprintf("CELERYTEST%d%d", os.Getpid(), time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(dir, "home", ".erlang.cookie"), []byte(cookie), 0o400); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[].\n"), 0o600); err != nil {
		return err
	}
	var err error
	for _, p := range []*int{&r.Port, &r.DistPort, &r.EPMDPort} {
		if *p, err = freePortErr(); err != nil {
			return err
		}
	}
	return nil
}

func freePortErr() (int, error) { return pickPort() }

// env is the environment of the node and of rabbitmqctl.
func (r *RabbitMQ) env() []string {
	return append(os.Environ(),
		"HOME="+filepath.Join(r.dir, "home"),
		"LC_ALL=C.UTF-8",
		fmt.Sprintf("ERL_EPMD_PORT=%d", r.EPMDPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
	)
}

// watchdog runs the node in the background and stops it (TERM: the script's graceful stop) as
// soon as its stdin, a pipe held by the test binary, reaches EOF; then it kills the node's epmd.
// Background jobs of a non-interactive sh read /dev/null, so stdin is kept as fd 3 for cat.
const watchdog = `exec 3<&0
"$CELERYTEST_RABBITMQ_SERVER" </dev/null 3<&- &
pid=$!
( cat <&3 >/dev/null; kill -TERM "$pid" 2>/dev/null ) &
wait "$pid"
code=$?
"$CELERYTEST_EPMD" -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1
exit $code
`

// start boots the node and waits until it accepts AMQP connections.
func (r *RabbitMQ) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
	}
	conf := fmt.Sprintf(`listeners.tcp.1 = 127.0.0.1:%d
loopback_users.guest = true
log.console = false
log.file.level = info
`, r.Port)
	if err := os.WriteFile(filepath.Join(r.dir, "rabbitmq.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(r.dir, "node.out")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command("/bin/sh", "-c", watchdog)
	cmd.Dir = r.dir
	cmd.Env = append(r.env(),
		"CELERYTEST_RABBITMQ_SERVER="+r.bin,
		"CELERYTEST_EPMD="+r.epmd,
		"RABBITMQ_NODENAME="+r.Node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", r.Port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", r.DistPort),
		// No scheduler busy-waiting: RabbitMQ's runtime guide advises it where the node shares
		// its cores, as here, where the broker, Redis, Python and Go share two. Spinning Erlang
		// schedulers otherwise take CPU from whichever client is being measured.
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1} "+
			"+sbwt none +sbwtdcpu none +sbwtdio none",
		"RABBITMQ_MNESIA_BASE="+filepath.Join(r.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(r.dir, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(r.dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(r.dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(r.dir, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(r.dir, "rabbitmq-env.conf"), // not /etc/rabbitmq's
	)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start rabbitmq-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.cmd, r.stdin, r.exited = cmd, stdin, exited

	fail := func(err error) error {
		_ = r.stopLocked()
		return fmt.Errorf("rabbitmq node %s (amqp port %d): %w\n%s", r.Node, r.Port, err, r.logsLocked())
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-exited:
			return fail(errors.New("exited while starting (port taken?)"))
		default:
		}
		if c, err := net.DialTimeout("tcp", r.Addr(), time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fail(errors.New("no AMQP listener after 2m"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The listener could belong to another process that took the port; the node answering under
	// its own name over its own epmd, with the listener on our port, proves it is ours.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := r.ctlOutput(ctx, "await_startup"); err != nil {
		return fail(err)
	}
	ls, err := r.ctlOutput(ctx, "eval", "rabbit_networking:active_listeners().")
	if err != nil {
		return fail(err)
	}
	// [{listener,Node,amqp,"localhost",{127,0,0,1},Port,[...]}, ...] with line breaks.
	compact := strings.Join(strings.Fields(string(ls)), "")
	if !regexp.MustCompile(fmt.Sprintf(`\{listener,'[^']*',amqp,"[^"]*",\{127,0,0,1\},%d,`, r.Port)).MatchString(compact) {
		return fail(fmt.Errorf("node does not listen on %d: %s", r.Port, ls))
	}
	r.StartTime = time.Since(begin)
	return nil
}

// Stop stops the node gracefully (as `rabbitmqctl stop` would: durable queues and persistent
// messages survive a later Start) and waits for it. Use it on a node from StartRabbitMQ only: the
// shared node belongs to every test of the binary.
func (r *RabbitMQ) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopLocked()
}

func (r *RabbitMQ) stopLocked() error {
	if r.cmd == nil {
		return nil
	}
	_ = r.stdin.Close() // the watchdog stops the node
	var err error
	select {
	case <-r.exited:
	case <-time.After(time.Minute):
		// Only our own process group: the watchdog, the node and rabbitmqctl children.
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
		err = fmt.Errorf("node did not stop within 1m; killed")
	}
	r.cmd, r.stdin, r.exited = nil, nil, nil
	return err
}

// Start starts the node again after Stop, on the same ports and data.
func (r *RabbitMQ) Start(t testing.TB) {
	t.Helper()
	if err := r.start(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// Kill SIGKILLs the node's process group (a broker crash); Start brings it back. Like Stop, only
// for a node from StartRabbitMQ.
func (r *RabbitMQ) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	<-r.exited
	// epmd daemonized out of the group; it is ours (private port), so stop it by its port once
	// the dying VM has dropped its registration (epmd -kill refuses while a node is registered).
	port := fmt.Sprint(r.EPMDPort)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, err := exec.Command(r.epmd, "-port", port, "-names").Output()
		if err != nil || !strings.Contains(string(out), "name ") {
			break
		}
	}
	_ = exec.Command(r.epmd, "-port", port, "-kill").Run()
	r.cmd, r.stdin, r.exited = nil, nil, nil
}

// Addr is host:port of the AMQP listener.
func (r *RabbitMQ) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// Logs returns the node's stdout/stderr and its log file, for failure messages.
func (r *RabbitMQ) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logsLocked()
}

func (r *RabbitMQ) logsLocked() string {
	var b strings.Builder
	out, _ := os.ReadFile(filepath.Join(r.dir, "node.out"))
	fmt.Fprintf(&b, "--- %s node.out:\n%s", r.Node, tail(out, 8000))
	logs, _ := filepath.Glob(filepath.Join(r.dir, "log", "*.log"))
	for _, p := range logs {
		data, _ := os.ReadFile(p)
		fmt.Fprintf(&b, "--- %s:\n%s", filepath.Base(p), tail(data, 8000))
	}
	return b.String()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return append([]byte("...\n"), b[len(b)-n:]...)
	}
	return b
}

// ctlOutput runs rabbitmqctl against the node and returns stdout; the error carries stderr.
func (r *RabbitMQ) ctlOutput(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, r.ctl, append([]string{"-n", r.Node, "-q"}, args...)...)
	cmd.Env = r.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("rabbitmqctl %s: %w\n%s%s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// Ctl runs `rabbitmqctl -n <node> -q args...` and returns its stdout, failing the test (with the
// node's logs) on error.
func (r *RabbitMQ) Ctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := r.ctlOutput(ctx, args...)
	if err != nil {
		t.Fatalf("testenv: %v\n%s", err, r.Logs())
	}
	return string(out)
}

// VHost is a virtual host of a node, created for one test; guest has all permissions on it.
type VHost struct {
	Node *RabbitMQ
	Name string
}

var vhostUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// VHost creates a fresh virtual host for the test (named after it) with full permissions for
// guest. The vhost is not deleted at the end: the node is private and short-lived, and deleting
// costs another rabbitmqctl round trip per test.
func (r *RabbitMQ) VHost(t testing.TB) *VHost {
	t.Helper()
	name := vhostUnsafe.ReplaceAllString(t.Name(), "_")
	if len(name) > 60 {
		name = name[:60]
	}
	name = fmt.Sprintf("%s-%d", name, r.vhosts.Add(1))
	r.Ctl(t, "add_vhost", name)
	r.Ctl(t, "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
	return &VHost{Node: r, Name: name}
}

// URL is the amqp:// URL of the vhost for guest (allowed from loopback only, which is where the
// node listens).
func (v *VHost) URL() string {
	return fmt.Sprintf("amqp://guest:guest@%s/%s", v.Node.Addr(), url.PathEscape(v.Name))
}

// Ctl runs a rabbitmqctl command scoped to the vhost (`-p <vhost>` is added after the command).
func (v *VHost) Ctl(t testing.TB, command string, args ...string) string {
	t.Helper()
	return v.Node.Ctl(t, append([]string{command, "-p", v.Name}, args...)...)
}

// List runs a rabbitmqctl list command (list_queues, list_exchanges, list_bindings,
// list_consumers, list_connections, list_channels) in the vhost with the given info items and
// returns one map per row. Values are as rabbitmqctl's JSON formatter gives them: numbers,
// booleans, strings, and queue/exchange arguments as lists of [name, value] pairs.
func (v *VHost) List(t testing.TB, command string, items ...string) []map[string]any {
	t.Helper()
	args := append([]string{command, "-p", v.Name, "--formatter", "json"}, items...)
	if command == "list_connections" { // connections have no -p; filter by vhost below
		args = append([]string{command, "--formatter", "json"}, append(items, "vhost")...)
	}
	out := v.Node.Ctl(t, args...)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &rows); err != nil {
		t.Fatalf("testenv: rabbitmqctl %s: not JSON: %v\n%s", command, err, out)
	}
	if command == "list_connections" {
		kept := rows[:0]
		for _, row := range rows {
			if row["vhost"] == v.Name {
				kept = append(kept, row)
			}
		}
		rows = kept
	}
	return rows
}

// CloseConnections closes every client connection to the vhost (connection.close with reason,
// as a broker restart or an operator would), so a test can check reconnection and redelivery
// without stopping the shared node.
func (v *VHost) CloseConnections(t testing.TB, reason string) {
	t.Helper()
	v.Node.Ctl(t, "close_all_connections", "-p", v.Name, reason)
}

// Queue is one queue's message counts as list_queues reports them.
type Queue struct {
	Name           string
	Ready, Unacked int
	Consumers      int
}

// Queues returns the queues of the vhost with their ready and unacknowledged counts.
func (v *VHost) Queues(t testing.TB) map[string]Queue {
	t.Helper()
	m := map[string]Queue{}
	for _, row := range v.List(t, "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers") {
		q := Queue{Name: fmt.Sprint(row["name"])}
		q.Ready, q.Unacked, q.Consumers = jsonInt(row["messages_ready"]), jsonInt(row["messages_unacknowledged"]), jsonInt(row["consumers"])
		m[q.Name] = q
	}
	return m
}

func jsonInt(v any) int {
	if f, ok := v.(float64); ok {
		return int(f)
	}
	return 0
}

// CtlScript writes (once) an executable that runs `rabbitmqctl -n <node> -q "$@"` with the
// node's cookie and epmd port, for scripts outside Go (testdata/python/capture_amqp.py), and
// returns its path.
func (r *RabbitMQ) CtlScript() (string, error) {
	p := filepath.Join(r.dir, "rabbitmqctl")
	script := fmt.Sprintf("#!/bin/sh\nexport HOME='%s' LC_ALL=C.UTF-8 ERL_EPMD_PORT=%d ERL_EPMD_ADDRESS=127.0.0.1\nexec '%s' -n '%s' -q \"$@\"\n",
		filepath.Join(r.dir, "home"), r.EPMDPort, r.ctl, r.Node)
	return p, os.WriteFile(p, []byte(script), 0o700)
}

// BaseURL is the node's amqp:// URL for guest without a vhost (append "/<vhost>").
func (r *RabbitMQ) BaseURL() string { return "amqp://guest:guest@" + r.Addr() }
