package celerybridge_test

// layout_test.go enforces the import rules of doc.go's package map with `go list`: the tree
// tells the architecture only while nothing quietly crosses it.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/celerybridge/celerybridge"

// listedPackage is what `go list -json` says about one package of the module.
type listedPackage struct {
	ImportPath   string
	Imports      []string // non-test files
	Deps         []string // non-test files, transitively
	TestImports  []string // package-internal _test.go files
	XTestImports []string // package_test files
}

// layoutViolations returns one line per broken rule; none means the layout holds.
func layoutViolations(pkgs []listedPackage) []string {
	var bad []string
	for _, p := range pkgs {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		inExamples := rel == "examples" || strings.HasPrefix(rel, "examples/")

		switch rel {
		case "celerycompat/protocol":
			// Only the standard library and its codec library (msgpack and its tag parser).
			for _, d := range p.Deps {
				first, _, _ := strings.Cut(d, "/")
				if strings.HasPrefix(d, module+"/") || strings.Contains(d, "redigo") || strings.Contains(d, "redis") {
					bad = append(bad, rel+" depends on "+d+": it imports no Redis client and nothing of the module")
				} else if strings.Contains(first, ".") && !strings.HasPrefix(d, "github.com/vmihailenco/") {
					bad = append(bad, rel+" depends on "+d+": only the standard library and msgpack are allowed")
				}
			}
		case "celerycompat/internal/rdb":
			// The Redis layer: redigo and the standard library only.
			for _, d := range p.Deps {
				first, _, _ := strings.Cut(d, "/")
				if strings.HasPrefix(d, module+"/") || (strings.Contains(first, ".") && !strings.HasPrefix(d, "github.com/gomodule/redigo")) {
					bad = append(bad, rel+" depends on "+d+": the Redis layer imports only redigo")
				}
			}
		case "celerycompat":
			for _, d := range p.Deps {
				if strings.Contains(d, "amqp091") || strings.HasPrefix(d, module+"/celerycompat/amqp") {
					bad = append(bad, rel+" depends on "+d+": the AMQP client stays in celerycompat/amqp")
				}
			}
		case "callback":
			var drivers []string
			for _, d := range p.Deps {
				for _, no := range []string{"sqlite", "github.com/jackc/pgx", "github.com/labstack/echo"} {
					if strings.Contains(d, no) {
						drivers = append(drivers, d)
						break
					}
				}
			}
			if len(drivers) > 0 {
				bad = append(bad, rel+" depends on "+strings.Join(drivers, ", ")+
					": SQLite and pgx live in callback/sqlitestore and callback/pgstore, and callback uses no web framework")
			}
		}

		for _, imp := range p.Imports {
			if imp == module+"/internal/celerytest" {
				bad = append(bad, p.ImportPath+" imports internal/celerytest in a non-test file: only tests may")
			}
		}
		if !inExamples {
			for _, list := range [][]string{p.Imports, p.TestImports, p.XTestImports} {
				for _, imp := range list {
					if imp == module+"/examples" || strings.HasPrefix(imp, module+"/examples/") {
						bad = append(bad, p.ImportPath+" imports "+imp+": nothing outside examples/ imports examples")
					}
				}
			}
		}
	}
	return bad
}

// TestLayout checks every package of the module against the rules.
func TestLayout(t *testing.T) {
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps,TestImports,XTestImports", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p.ImportPath] = true
	}
	for _, want := range []string{"celerycompat", "celerycompat/protocol", "celerycompat/internal/rdb", "callback", "internal/celerytest"} {
		if !seen[module+"/"+want] {
			t.Fatalf("go list did not list %s/%s: the rules would check nothing", module, want)
		}
	}
	for _, v := range layoutViolations(pkgs) {
		t.Error(v)
	}
}

// TestLayoutRules shows that each rule catches what it forbids.
func TestLayoutRules(t *testing.T) {
	tests := []struct {
		name string
		pkg  listedPackage
		bad  bool
	}{
		{"protocol on redigo", listedPackage{ImportPath: module + "/celerycompat/protocol",
			Deps: []string{"fmt", "github.com/gomodule/redigo/redis"}}, true},
		{"protocol on celerycompat", listedPackage{ImportPath: module + "/celerycompat/protocol",
			Deps: []string{module + "/celerycompat"}}, true},
		{"protocol on another library", listedPackage{ImportPath: module + "/celerycompat/protocol",
			Deps: []string{"github.com/google/uuid"}}, true},
		{"rdb on celerycompat", listedPackage{ImportPath: module + "/celerycompat/internal/rdb",
			Deps: []string{module + "/celerycompat/protocol"}}, true},
		{"rdb on redigo", listedPackage{ImportPath: module + "/celerycompat/internal/rdb",
			Deps: []string{"context", "github.com/gomodule/redigo/redis"}}, false},
		{"celerycompat on amqp091", listedPackage{ImportPath: module + "/celerycompat",
			Deps: []string{"github.com/rabbitmq/amqp091-go"}}, true},
		{"protocol on msgpack", listedPackage{ImportPath: module + "/celerycompat/protocol",
			Deps: []string{"encoding/json", "github.com/vmihailenco/msgpack/v5", "github.com/vmihailenco/tagparser/v2"}}, false},
		{"callback on sqlite", listedPackage{ImportPath: module + "/callback",
			Deps: []string{"modernc.org/sqlite"}}, true},
		{"callback on pgx", listedPackage{ImportPath: module + "/callback",
			Deps: []string{"github.com/jackc/pgx/v5"}}, true},
		{"callback on echo", listedPackage{ImportPath: module + "/callback",
			Deps: []string{"github.com/labstack/echo/v4"}}, true},
		{"callback tests on sqlitestore", listedPackage{ImportPath: module + "/callback",
			XTestImports: []string{module + "/callback/sqlitestore"}}, false},
		{"sqlitestore on sqlite", listedPackage{ImportPath: module + "/callback/sqlitestore",
			Deps: []string{"modernc.org/sqlite"}}, false},
		{"non-test file on celerytest", listedPackage{ImportPath: module + "/gocelery",
			Imports: []string{module + "/internal/celerytest"}}, true},
		{"test on celerytest", listedPackage{ImportPath: module + "/gocelery",
			TestImports: []string{module + "/internal/celerytest"}, XTestImports: []string{module + "/internal/celerytest"}}, false},
		{"library on examples", listedPackage{ImportPath: module + "/celerycompat",
			Imports: []string{module + "/examples/internal/rig"}}, true},
		{"library test on examples", listedPackage{ImportPath: module + "/callback",
			XTestImports: []string{module + "/examples/internal/loadtest"}}, true},
		{"example on examples", listedPackage{ImportPath: module + "/examples/worker",
			Imports: []string{module + "/examples/internal/rig"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := layoutViolations([]listedPackage{tt.pkg})
			if bad := len(got) > 0; bad != tt.bad {
				t.Errorf("violations = %q, want any: %v", got, tt.bad)
			}
		})
	}
}
