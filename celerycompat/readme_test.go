package celerycompat_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/celerybridge/celerybridge/internal/celerytest"
)

// TestREADMECompiles builds README.md's Go code as a module outside this repository would:
// each ```go block that is a program is written to a temp module whose go.mod requires this
// module through a replace directive pointing at the checkout, and `go build` must succeed.
func TestREADMECompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a module")
	}
	root := celerytest.RepoRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```go block")
	}
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)`).FindSubmatch(goMod)
	// This module's own requirements, so the build resolves offline from the module cache.
	requires := regexp.MustCompile(`(?ms)^require \(.*?^\)|^require [^(].*?$`).FindAll(goMod, -1)
	for i, b := range blocks {
		src := string(b[1])
		if !strings.HasPrefix(src, "package ") {
			t.Errorf("README ```go block %d is not a complete program (add package and imports)", i)
			continue
		}
		dir := t.TempDir()
		mod := "module readmeexample\n\ngo " + string(goVersion[1]) + "\n\n" +
			"require github.com/celerybridge/celerybridge v0.0.0\n\n" +
			string(joinLines(requires)) + "\n\n" +
			"replace github.com/celerybridge/celerybridge => " + root + "\n"
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		sum, err := os.ReadFile(filepath.Join(root, "go.sum")) // the checksums, for an offline build
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644); err != nil {
			t.Fatal(err)
		}
		// No network: the dependencies come from the module cache and this repo's go.sum.
		for _, args := range [][]string{{"build", "-o", os.DevNull, "."}} {
			cmd := exec.Command("go", args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("README ```go block %d: go %s: %v\n%s", i, strings.Join(args, " "), err, out)
			}
		}
	}
}

func joinLines(parts [][]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(append(out, p...), '\n')
	}
	return out
}
