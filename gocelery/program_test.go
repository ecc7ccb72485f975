package gocelery_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestGocelerySourceProgramBuilds builds testdata/readmeprogram, a program written against
// gocelery v1's API in the shape of its README with only the import path changed, as a module
// outside this repository would (a replace directive pointing at this checkout, no network),
// then runs it against a real Redis: its worker serves its own Delay and DelayKwargs.
func TestGocelerySourceProgramBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a module")
	}
	bin := buildProgram(t, "readmeprogram")

	r := celerytest.StartRedis(t)
	run := exec.Command(bin)
	run.Env = append(os.Environ(), "REDIS_URL="+r.URL(0))
	out, err := run.CombinedOutput()
	if err != nil {
		t.Fatalf("program: %v\n%s", err, out)
	}
	for _, want := range []string{"add: 8334 of type float64", "multiply: 42 ready true", "done"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("program output lacks %q:\n%s", want, out)
		}
	}
}

// buildProgram builds testdata/<name>/main.go as a module outside this repository would (a
// replace directive pointing at this checkout, no network) and returns the binary. The program
// may import no package of ours but gocelery.
func buildProgram(t *testing.T, name string) string {
	t.Helper()
	root := celerytest.RepoRoot(t)
	src, err := os.ReadFile(filepath.Join(root, "gocelery", "testdata", name, "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	// Only the import path differs from a gocelery program: no other package of ours is used.
	imports := regexp.MustCompile(`"github.com/celerybridge/celerybridge/[^"]*"`).FindAllString(string(src), -1)
	if len(imports) != 1 || imports[0] != `"github.com/celerybridge/celerybridge/gocelery"` {
		t.Fatalf("program imports %v; it may use only the gocelery package", imports)
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(goMod)
	requires := regexp.MustCompile(`(?ms)^require \(.*?^\)|^require [^(].*?$`).FindAll(goMod, -1)
	var req strings.Builder
	for _, r := range requires {
		req.Write(r)
		req.WriteByte('\n')
	}
	dir := t.TempDir()
	mod := "module gocelerypgm\n\ngo " + string(goVersion[1]) + "\n\n" +
		"require github.com/celerybridge/celerybridge v0.0.0\n\n" + req.String() + "\n" +
		"replace github.com/celerybridge/celerybridge => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(mod), "go.sum": sum, "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "pgm")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	return bin
}
