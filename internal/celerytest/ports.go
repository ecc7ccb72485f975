package celerytest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// A port for a server a test starts (redis-server, rabbitmq-server, a service of the rig) is
// chosen below the kernel's ephemeral range. A port the kernel picked for ":0" is in that range,
// and between our check and the server's bind the kernel may give it to an outgoing connection
// of another test process (seen: RabbitMQ failing with dist_port_already_used). Below the range
// only listeners take ports, and each candidate is checked free first.

var (
	portsMu sync.Mutex
	given   = map[int]bool{} // ports this process handed out already
)

// ephemeralLow is the lowest port the kernel hands out on its own (ip_local_port_range).
func ephemeralLow() int {
	raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	lo, err := strconv.Atoi(strings.Fields(string(raw))[0])
	if err != nil || lo < 12000 {
		return 32768
	}
	return lo
}

// pickPort returns a loopback port that is free now, below the ephemeral range, and not handed
// out before by this process.
func pickPort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	const low = 10000
	high := ephemeralLow()
	for range 200 {
		p := low + rand.IntN(high-low)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		_ = l.Close()
		given[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("celerytest: no free port found in %d..%d", low, high)
}

// FreePort returns a loopback port free for a server the test starts (see pickPort).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := pickPort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}
