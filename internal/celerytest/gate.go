package celerytest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// Gate is a TCP proxy on a loopback port in front of a real server, for tests of a peer that is
// down, hung or back: it refuses connections (accepts and closes them at once), hangs them
// (accepts and never answers, as a paused process does) or forwards them. It starts refusing.
type Gate struct {
	ln     net.Listener
	target string
	mode   atomic.Int32
	mu     sync.Mutex
	conns  []net.Conn
}

const (
	gateRefuse int32 = iota
	gateHang
	gateForward
)

// NewGate listens on a loopback port in front of target (host:port). The test's cleanup closes
// the listener and every connection it accepted.
func NewGate(t testing.TB, target string) *Gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{ln: ln, target: target}
	t.Cleanup(func() {
		_ = ln.Close()
		g.Drop()
	})
	go g.serve()
	return g
}

// GateURL parses raw (a URL such as amqp://guest:guest@127.0.0.1:5672/vh), puts a Gate in front
// of its host and returns the Gate and the URL that goes through it.
func GateURL(t testing.TB, raw string) (*Gate, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGate(t, u.Host)
	u.Host = g.Addr()
	return g, u.String()
}

// Addr is the gate's host:port.
func (g *Gate) Addr() string { return g.ln.Addr().String() }

// Refuse makes new connections close at once (the server is down).
func (g *Gate) Refuse() { g.mode.Store(gateRefuse) }

// Hang makes new connections open but never answered (the server hangs).
func (g *Gate) Hang() { g.mode.Store(gateHang) }

// Forward makes new connections reach the server.
func (g *Gate) Forward() { g.mode.Store(gateForward) }

// Accepted is how many connections the gate has accepted.
func (g *Gate) Accepted() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.conns {
		if c.LocalAddr().String() == g.Addr() {
			n++
		}
	}
	return n
}

// Drop closes every connection the gate holds, hung or forwarded.
func (g *Gate) Drop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.conns {
		_ = c.Close()
	}
}

func (g *Gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		g.conns = append(g.conns, c)
		g.mu.Unlock()
		switch g.mode.Load() {
		case gateRefuse:
			_ = c.Close()
		case gateHang: // held open, never answered, closed by Drop or cleanup
		case gateForward:
			up, err := net.Dial("tcp", g.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			g.mu.Lock()
			g.conns = append(g.conns, up)
			g.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}
}
