package protocol

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPure checks the package's promise in doc.go: no Redis client and no celerycompat among
// its dependencies, and nothing outside the standard library but the msgpack codec.
func TestPure(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const self = "github.com/celerybridge/celerybridge/celerycompat/protocol"
	for _, dep := range strings.Fields(string(out)) {
		first, _, _ := strings.Cut(dep, "/")
		switch {
		case dep == self:
		case strings.Contains(dep, "redigo"), strings.Contains(dep, "redis"), strings.HasSuffix(dep, "celerycompat"):
			t.Errorf("protocol depends on %s", dep)
		case !strings.Contains(first, "."): // standard library
		case strings.HasPrefix(dep, "github.com/vmihailenco/"): // msgpack and its tag parser
		default:
			t.Errorf("protocol depends on %s, which doc.go does not allow", dep)
		}
	}
}
