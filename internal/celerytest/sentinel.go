package celerytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// SentinelMaster is the name the sentinels of StartSentinels monitor the master under (Celery's
// master_name transport option).
const SentinelMaster = "mymaster"

// Sentinels is a Redis master, its replicas and three sentinels on loopback ports, owned by one
// test. The sentinels declare the master down after 1 s and promote a replica within a few
// seconds (quorum 2).
type Sentinels struct {
	t        testing.TB
	bin      string
	Master   *Node
	Replica  *Node   // the first replica
	Replicas []*Node // every replica
	Watchers []*Node // the three sentinels
}

// Node is one redis-server process (a data node or a sentinel).
type Node struct {
	Port   int
	Dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
}

// Addr is host:port.
func (n *Node) Addr() string { return fmt.Sprintf("127.0.0.1:%d", n.Port) }

// Signal sends sig to the process (SIGSTOP and SIGCONT make a replica lag); a stopped node is
// left alone.
func (n *Node) Signal(sig os.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

// Kill SIGKILLs the process (a crash: nothing is persisted) and waits for it to exit.
func (n *Node) Kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
	n.cmd = nil
}

// StartSentinels starts a master with one replica and three sentinels; see StartSentinelsN.
func StartSentinels(t testing.TB) *Sentinels { t.Helper(); return StartSentinelsN(t, 1) }

// StartSentinelsN starts a master with the given number of replicas (at least one) and three
// sentinels, and waits until the replicas are in sync and every sentinel knows them and the other
// two sentinels, so that a failover can happen. Everything is killed when the test ends.
func StartSentinelsN(t testing.TB, replicas int) *Sentinels {
	t.Helper()
	bin := os.Getenv("CELERYBRIDGE_REDIS_SERVER")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			Missing(t, "redis-server not found on PATH")
		}
	}
	s := &Sentinels{t: t, bin: bin}
	data := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning"}
	s.Master = s.start(func(n *Node) []string {
		return append([]string{"--port", fmt.Sprint(n.Port), "--dir", n.Dir, "--logfile", filepath.Join(n.Dir, "log")}, data...)
	})
	for range max(1, replicas) {
		n := s.start(func(n *Node) []string {
			return append([]string{"--port", fmt.Sprint(n.Port), "--dir", n.Dir, "--logfile", filepath.Join(n.Dir, "log"),
				"--replicaof", "127.0.0.1", fmt.Sprint(s.Master.Port)}, data...)
		})
		s.Replicas = append(s.Replicas, n)
		s.waitFor("replica in sync", func() bool {
			info, err := nodeDo(n.Addr(), "INFO", "replication")
			return err == nil && strings.Contains(string(info.([]byte)), "master_link_status:up")
		})
	}
	s.Replica = s.Replicas[0]
	for range 3 {
		s.Watchers = append(s.Watchers, s.start(func(n *Node) []string {
			conf := filepath.Join(n.Dir, "sentinel.conf")
			text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n", n.Port, n.Dir, filepath.Join(n.Dir, "log")) +
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\n", SentinelMaster, s.Master.Port) +
				fmt.Sprintf("sentinel down-after-milliseconds %s 1000\n", SentinelMaster) +
				fmt.Sprintf("sentinel failover-timeout %s 5000\n", SentinelMaster)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{conf, "--sentinel"}
		}))
	}
	for _, w := range s.Watchers {
		s.waitFor("sentinel "+w.Addr()+" sees the group", func() bool {
			others, err1 := redis.Values(nodeDo(w.Addr(), "SENTINEL", "sentinels", SentinelMaster))
			replicas, err2 := redis.Values(nodeDo(w.Addr(), "SENTINEL", "replicas", SentinelMaster))
			return err1 == nil && err2 == nil && len(others) == 2 && len(replicas) == len(s.Replicas)
		})
	}
	return s
}

// URL is the kombu/Celery sentinel URL of database db: every sentinel, ";"-separated.
func (s *Sentinels) URL(db int) string {
	parts := make([]string, len(s.Watchers))
	for i, w := range s.Watchers {
		parts[i] = "sentinel://" + w.Addr()
		if i == 0 {
			parts[i] += fmt.Sprintf("/%d", db)
		}
	}
	return strings.Join(parts, ";")
}

// MasterAddr is the master's host:port as the first sentinel that answers sees it.
func (s *Sentinels) MasterAddr() (string, error) {
	var last error
	for _, w := range s.Watchers {
		a, err := redis.Strings(nodeDo(w.Addr(), "SENTINEL", "get-master-addr-by-name", SentinelMaster))
		if err == nil && len(a) == 2 {
			return a[0] + ":" + a[1], nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel names the master: %v", last)
}

// WaitFailover waits until the sentinels name a replica master and it answers ROLE master, and
// returns how long that took from since. It fails the test after timeout (call it from the test's
// goroutine).
func (s *Sentinels) WaitFailover(since time.Time, timeout time.Duration) time.Duration {
	s.t.Helper()
	d, err := s.AwaitFailover(since, timeout)
	if err != nil {
		s.t.Fatalf("celerytest: %v", err)
	}
	return d
}

// AwaitFailover is WaitFailover returning an error instead of failing the test, for use from
// other goroutines.
func (s *Sentinels) AwaitFailover(since time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if a, err := s.MasterAddr(); err == nil && a != s.Master.Addr() {
			if role, err := redis.Values(nodeDo(a, "ROLE")); err == nil && len(role) > 0 {
				if r, _ := redis.String(role[0], nil); r == "master" {
					return time.Since(since), nil
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("sentinels did not promote a replica of %s within %v", s.Master.Addr(), timeout)
}

func (s *Sentinels) waitFor(what string, ok func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			s.t.Fatalf("celerytest: sentinels: %s: not after 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// start runs redis-server with args(node) on a free port, retrying when the port is taken.
func (s *Sentinels) start(args func(*Node) []string) *Node {
	s.t.Helper()
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		n := &Node{Port: FreePort(s.t), Dir: s.t.TempDir()}
		cmd := exec.Command(s.bin, args(n)...)
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("celerytest: start redis-server: %v", err)
		}
		n.cmd, n.exited = cmd, make(chan struct{})
		go func() { _ = cmd.Wait(); close(n.exited) }()
		s.t.Cleanup(n.Kill)
		if last = n.await(); last == nil {
			return n
		}
		n.Kill()
	}
	s.t.Fatalf("celerytest: %v", last)
	return nil
}

// await waits until the node answers as the process we started.
func (n *Node) await() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-n.exited:
			log, _ := os.ReadFile(filepath.Join(n.Dir, "log"))
			return fmt.Errorf("redis-server on %s exited at start (port taken?):\n%s", n.Addr(), log)
		default:
		}
		pid, err := serverPID(n.Addr())
		if err == nil && pid == n.cmd.Process.Pid {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer: %v", n.Addr(), err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func nodeDo(addr, cmd string, args ...any) (any, error) {
	c, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(time.Second),
		redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// Switches is every sentinel's record of master switches and failover starts so far
// ("+switch-master", "+try-failover", "+odown" lines of its log), for a failing test to show
// whether the sentinels failed over more often than it caused.
func (s *Sentinels) Switches() string {
	var b strings.Builder
	for _, w := range s.Watchers {
		log, err := os.ReadFile(filepath.Join(w.Dir, "log"))
		if err != nil {
			fmt.Fprintf(&b, "sentinel %s: %v\n", w.Addr(), err)
			continue
		}
		for _, line := range strings.Split(string(log), "\n") {
			if strings.Contains(line, "+switch-master") || strings.Contains(line, "+try-failover") ||
				strings.Contains(line, "+odown") {
				fmt.Fprintf(&b, "sentinel %s: %s\n", w.Addr(), line)
			}
		}
	}
	return b.String()
}

// DataNodes describes every data node still running: its role, and for each given list of
// database 0 its length, and the size of database 0's "unacked" hash, so that a failing test can
// show where messages went.
func (s *Sentinels) DataNodes(lists ...string) string {
	var b strings.Builder
	for _, n := range append([]*Node{s.Master}, s.Replicas...) {
		role, err := redis.Values(nodeDo(n.Addr(), "ROLE"))
		if err == nil && len(role) == 0 {
			err = fmt.Errorf("empty ROLE reply")
		}
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", n.Addr(), err)
			continue
		}
		r, _ := redis.String(role[0], nil)
		fmt.Fprintf(&b, "%s: %s", n.Addr(), r)
		for _, l := range lists {
			ln, err := redis.Int(nodeDo(n.Addr(), "LLEN", l))
			fmt.Fprintf(&b, ", LLEN %s %d (%v)", l, ln, err)
		}
		un, err := redis.Int(nodeDo(n.Addr(), "HLEN", "unacked"))
		fmt.Fprintf(&b, ", HLEN unacked %d (%v)\n", un, err)
	}
	return b.String()
}
