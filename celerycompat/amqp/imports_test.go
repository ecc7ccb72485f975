package amqp

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports holds the package to what doc.go says it imports: the standard library,
// celerycompat, celerycompat/protocol and amqp091-go.
func TestImports(t *testing.T) {
	allowed := map[string]bool{
		"github.com/celerybridge/celerybridge/celerycompat":          true,
		"github.com/celerybridge/celerybridge/celerycompat/protocol": true,
		"github.com/rabbitmq/amqp091-go":                             true,
	}
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(p, "/")
			if strings.Contains(first, ".") && !allowed[p] {
				t.Errorf("%s imports %s", f, p)
			}
		}
	}
}
