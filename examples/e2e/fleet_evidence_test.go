package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// How TestFleet tells kombu's own loss from ours.
//
// A Python worker takes a message with BRPOP and only then, in a second round trip (MULTI, ZADD
// unacked_index, HSET unacked, EXEC), records it as un-acked. SIGKILLed between the two, it takes
// the message with it: nothing in Redis holds it any more, nothing will restore it
// (celery/celery#7950, kombu's transport, not ours). The Go worker pops and records in one Lua
// script, so it has no such window.
//
// The test records every command Redis executes (MONITOR, started before any service) and, for
// each task id, the commands that carried it. It freezes the Python victim (SIGSTOP) before the
// SIGKILL, so the victim's TCP connections to Redis can be read from /proc while they still
// exist, and then writes a marker (ECHO) into the command stream once the victim is dead. A task
// that never completed is charged to kombu's window only if all of these hold:
//
//  1. the MONITOR stream is complete: it ran from before the first service to after the run,
//     and the connection never failed;
//  2. the task id was carried by exactly one LPUSH (the API's publish; the API's own
//     bookkeeping before it carries the id too), that LPUSH came before the kill marker, and no
//     command after it carried the id (reads aside): so it was published while the victim was
//     alive, and no consumer ever recorded it as un-acked (every Go fetch and every Python
//     delivery writes the message into the unacked hash, with its id, in a command MONITOR
//     shows: the Go one inside its Lua script), no restore ever pushed it back, no result was
//     ever stored for it;
//  3. no list in Redis holds it at the end: it was popped, by a pop that recorded nothing. The
//     Go fetch records in the same step; the surviving Python worker records within
//     milliseconds and lives to the end; so the pop was the victim's BRPOP;
//  4. the last thing the victim did was a BRPOP: its last BRPOP comes after its last write to
//     the unacked hash, so it died holding one popped, unrecorded message (or none, if that
//     BRPOP returned empty);
//  5. the victim's log never mentions the id (kombu logs "received" only after recording it);
//  6. at most one task is so charged: one BRPOP pops one message.
//
// Anything else that is lost fails the test.

// monitorLine splits a MONITOR line: `<time> [<db> <client>] "<command>" "<arg>"...`.
var monitorLine = regexp.MustCompile(`^[0-9.]+ \[\d+ ([^\]]+)\] "([^"]*)"(?: "((?:[^"\\]|\\.)*)")?`)

// uuidRE finds task ids (and delivery tags) in a command's arguments.
var uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// readOnly are the commands that read what they name: they neither take a message nor record
// one (the load test reads each task's result at the end), so they are not mentions.
var readOnly = map[string]bool{"get": true, "mget": true, "exists": true, "hget": true, "hmget": true,
	"hexists": true, "lrange": true, "lpos": true, "llen": true, "ttl": true, "pttl": true, "type": true}

// mention is one command that carried a task id.
type mention struct {
	seq    int64
	client string // "127.0.0.1:port", or "lua" for a command run by a script
	cmd    string // lower case
}

// clientMarks is what the attribution needs to know of one client connection.
type clientMarks struct {
	lastBRPOP, lastRecord int64 // sequence numbers; lastRecord is the last HSET/ZADD on unacked*
}

// monitor is a Redis MONITOR connection and what it has seen. Safe for concurrent use.
type monitor struct {
	conn redis.Conn
	done chan struct{}

	mu       sync.Mutex
	seq      int64
	mentions map[string][]mention
	clients  map[string]*clientMarks
	markers  map[string]int64
	err      error
}

// startMonitor starts recording the commands of the rig's Redis. Call it before any service.
func startMonitor(t testing.TB, r *redisServer) *monitor {
	t.Helper()
	c, err := redis.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.Port))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("MONITOR"); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if ok, err := redis.String(c.Receive()); err != nil || ok != "OK" {
		t.Fatalf("MONITOR: %q %v", ok, err)
	}
	m := &monitor{conn: c, done: make(chan struct{}), mentions: map[string][]mention{},
		clients: map[string]*clientMarks{}, markers: map[string]int64{}}
	go m.read()
	t.Cleanup(func() { c.Close(); <-m.done })
	return m
}

func (m *monitor) read() {
	defer close(m.done)
	for {
		line, err := redis.String(m.conn.Receive())
		if err != nil {
			m.mu.Lock()
			m.err = err
			m.mu.Unlock()
			return
		}
		m.add(line)
	}
}

func (m *monitor) add(line string) {
	f := monitorLine.FindStringSubmatch(line)
	if f == nil {
		return
	}
	client, cmd, key := f[1], strings.ToLower(f[2]), f[3]
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	cm := m.clients[client]
	if cm == nil {
		cm = &clientMarks{}
		m.clients[client] = cm
	}
	switch {
	case cmd == "brpop":
		cm.lastBRPOP = m.seq
	case (cmd == "hset" || cmd == "zadd") && strings.HasPrefix(key, "unacked"):
		cm.lastRecord = m.seq
	case cmd == "echo" && strings.HasPrefix(key, "fleet-marker:"):
		m.markers[strings.TrimPrefix(key, "fleet-marker:")] = m.seq
	}
	if cmd == "brpop" || cmd == "echo" || readOnly[cmd] {
		return
	}
	seen := map[string]bool{}
	for _, id := range uuidRE.FindAllString(line, -1) {
		if !seen[id] && len(m.mentions[id]) < 8 {
			seen[id] = true
			m.mentions[id] = append(m.mentions[id], mention{seq: m.seq, client: client, cmd: cmd})
		}
	}
}

// mark writes a marker into the command stream and waits until the monitor has seen it.
func (m *monitor) mark(t testing.TB, r *redisServer, name string) int64 {
	t.Helper()
	r.do("ECHO", "fleet-marker:"+name)
	// The reader may lag behind Redis (it scans every command for ids, slower under -race):
	// give it time, as long as it keeps reading.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		m.mu.Lock()
		seq, ok, err := m.markers[name], m.markers[name] != 0, m.err
		m.mu.Unlock()
		switch {
		case ok:
			return seq
		case err != nil:
			t.Fatalf("MONITOR failed: %v", err)
		case time.Now().After(deadline):
			t.Fatalf("MONITOR did not show marker %s within 5 minutes", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// redisClients lists the "127.0.0.1:port" addresses of the TCP connections that the processes of
// p's group hold to port: the client names MONITOR gives them. Call it while p is stopped.
func redisClients(t testing.TB, p *proc, port int) []string {
	t.Helper()
	inodes := map[string]bool{}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		pid, _ := strconv.Atoi(filepath.Base(dir))
		if pgid, err := syscall.Getpgid(pid); err != nil || pgid != p.cmd.Process.Pid {
			continue
		}
		fds, _ := filepath.Glob(dir + "/fd/*")
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	var out []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			continue
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			local, remote := hexPort(fields[1]), hexPort(fields[2])
			if remote == port {
				out = append(out, fmt.Sprintf("127.0.0.1:%d", local))
			}
		}
		f.Close()
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no connection to Redis port %d", p.name, port)
	}
	return out
}

// hexPort is the port of a /proc/net/tcp address ("0100007F:1F90").
func hexPort(addr string) int {
	_, h, _ := strings.Cut(addr, ":")
	n, _ := strconv.ParseInt(h, 16, 32)
	return int(n)
}

// pyKill is the record of a Python worker SIGKILLed under MONITOR.
type pyKill struct {
	victim  *proc
	clients []string // its connections to Redis when it died
	marker  int64    // sequence number of the marker written after its death
}

// killPython freezes p, notes its Redis connections, SIGKILLs it and marks the stream.
func (m *monitor) killPython(t testing.TB, r *redisServer, p *proc) pyKill {
	t.Helper()
	p.signal(syscall.SIGSTOP)
	// What the victim wrote before it stopped reaches Redis in a moment; what it had not written
	// dies with it.
	clients := redisClients(t, p, r.Port)
	p.kill()
	return pyKill{victim: p, clients: clients, marker: m.mark(t, r, "killed-"+p.name)}
}

// victimLast returns the sequence numbers of the victim's last BRPOP and last unacked write
// (m.mu held).
func (m *monitor) victimLast(kill *pyKill) (brpop, record int64) {
	for _, c := range kill.clients {
		if cm := m.clients[c]; cm != nil {
			brpop, record = max(brpop, cm.lastBRPOP), max(record, cm.lastRecord)
		}
	}
	return brpop, record
}

// victimMarks says where the victim's last BRPOP and last unacked write stand in the stream
// (m.mu held).
func (m *monitor) victimMarks(kill *pyKill) string {
	if kill == nil {
		return "none killed"
	}
	vb, vr := m.victimLast(kill)
	state := "it had recorded what it took"
	if vb > vr {
		state = "a BRPOP last: it may have died holding one message"
	}
	return fmt.Sprintf("#%d/#%d, killed before #%d (%s)", vb, vr, kill.marker, state)
}

// attribution is the verdict on the tasks a run lost.
type attribution struct {
	kombu []string // lost in kombu's BRPOP window, with the evidence
	ours  []string // anything else, with what was seen
}

// attribute decides, for each lost Celery task id, whether the evidence above charges it to the
// killed Python worker's BRPOP window (kill nil: no Python worker was killed).
func (m *monitor) attribute(t testing.TB, r *redisServer, kill *pyKill, lost []string) attribution {
	t.Helper()
	end := m.mark(t, r, "end")
	victimLog := ""
	if kill != nil {
		victimLog = kill.victim.log()
	}
	return m.judge(kill, lost, listedIDs(t, r), victimLog, end)
}

// judge is attribute on what was gathered: the ids found in lists at the end, the victim's log,
// the end marker's sequence number.
func (m *monitor) judge(kill *pyKill, lost []string, inLists map[string]bool, victimLog string, end int64) attribution {
	m.mu.Lock()
	defer m.mu.Unlock()
	var a attribution
	if m.err != nil || end == 0 {
		for _, id := range lost {
			a.ours = append(a.ours, fmt.Sprintf("%s (no evidence: MONITOR failed: %v)", id, m.err))
		}
		return a
	}
	var vb, vr int64
	if kill != nil {
		vb, vr = m.victimLast(kill)
	}
	for _, id := range lost {
		ms := m.mentions[id]
		why := fmt.Sprintf("%s: commands that carried it %+v; in a list at the end: %v; end marker #%d", id, ms, inLists[id], end)
		if kill == nil {
			a.ours = append(a.ours, why)
			continue
		}
		why += fmt.Sprintf("; victim %s: connections %v, last BRPOP #%d, last unacked write #%d, killed before #%d",
			kill.victim.name, kill.clients, vb, vr, kill.marker)
		var pushes int
		var pushedAt, lastSeen int64
		for _, x := range ms {
			if x.cmd == "lpush" {
				pushes++
				pushedAt = x.seq
			}
			lastSeen = max(lastSeen, x.seq)
		}
		window := vb > vr && vb < kill.marker
		if window && pushes == 1 && lastSeen == pushedAt && pushedAt < kill.marker && len(ms) < 8 &&
			!inLists[id] && !strings.Contains(victimLog, id) && len(a.kombu) == 0 {
			a.kombu = append(a.kombu, why)
		} else {
			a.ours = append(a.ours, why)
		}
	}
	return a
}

// listedIDs is the set of task ids found in any list in Redis.
func listedIDs(t testing.TB, r *redisServer) map[string]bool {
	t.Helper()
	c := r.Pool(0).Get()
	defer c.Close()
	out := map[string]bool{}
	cursor := 0
	for {
		v, err := redis.Values(c.Do("SCAN", cursor, "TYPE", "list", "COUNT", 1000))
		if err != nil {
			t.Fatal(err)
		}
		cursor, _ = redis.Int(v[0], nil)
		keys, _ := redis.Strings(v[1], nil)
		for _, k := range keys {
			items, err := redis.Strings(c.Do("LRANGE", k, 0, -1))
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range items {
				for _, id := range uuidRE.FindAllString(it, -1) {
					out[id] = true
				}
			}
		}
		if cursor == 0 {
			return out
		}
	}
}
