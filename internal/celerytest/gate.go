package celerytest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Gate is a TCP proxy on a loopback port in front of a real server, for tests of a peer that is
// down, hung or back: it refuses connections (accepts and closes them at once), hangs them
// (accepts and never answers, as a paused process does) or forwards them. It starts refusing.
type Gate struct {
	ln     net.Listener
	target string
	mode   atomic.Int32
	paused atomic.Bool
	closed atomic.Bool // the test ended: a paused copy gives up
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
		g.closed.Store(true)
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

// Pause freezes the connections the gate forwards, as a paused server process (SIGSTOP) does:
// they stay open, and nothing more passes either way until Resume.
func (g *Gate) Pause() { g.paused.Store(true) }

// Resume lets the forwarded connections' traffic through again.
func (g *Gate) Resume() { g.paused.Store(false) }

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
			go func() { g.copy(up, c); _ = up.Close() }()
			go func() { g.copy(c, up); _ = c.Close() }()
		}
	}
}

// copy forwards src to dst until either fails, holding what it read while the gate is paused.
func (g *Gate) copy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for g.paused.Load() && !g.closed.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
