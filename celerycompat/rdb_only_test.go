package celerycompat_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// redisCommandCalls lists, for the non-test Go files of dir, the calls that send a Redis command
// by name: X.Do("CMD", …), X.Send("CMD", …), X.DoContext(ctx, "CMD", …), redis.DoContext(c,
// ctx, "CMD", …) and redis.NewScript. Everything Redis is internal/rdb's job (its doc.go).
func redisCommandCalls(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		file, err := parser.ParseFile(fset, f, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			argAt := map[string]int{"Do": 0, "Send": 0, "DoContext": 1}[sel.Sel.Name]
			if x, ok := sel.X.(*ast.Ident); ok && x.Name == "redis" {
				switch sel.Sel.Name {
				case "DoContext":
					argAt = 2
				case "NewScript":
					found = append(found, fset.Position(call.Pos()).String()+" redis.NewScript")
					return true
				}
			}
			if _, known := map[string]bool{"Do": true, "Send": true, "DoContext": true}[sel.Sel.Name]; !known || len(call.Args) <= argAt {
				return true
			}
			if lit, ok := call.Args[argAt].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				cmd, _ := strconv.Unquote(lit.Value)
				found = append(found, fset.Position(call.Pos()).String()+" "+cmd)
			}
			return true
		})
	}
	sort.Strings(found)
	return found
}

// TestRedisCommandsOnlyInRDB: celerycompat sends no Redis command itself; internal/rdb does.
func TestRedisCommandsOnlyInRDB(t *testing.T) {
	for _, c := range redisCommandCalls(t, ".") {
		t.Errorf("%s: a Redis command outside internal/rdb", c)
	}
	if got := redisCommandCalls(t, "internal/rdb"); len(got) == 0 {
		t.Fatal("found no command in internal/rdb: the check sees nothing")
	}
}
