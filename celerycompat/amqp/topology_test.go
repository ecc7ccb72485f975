package amqp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTopologyMatchesCelery: the exchanges, queues (with their arguments) and bindings Go
// declares when publishing to "celery" and "other" are those Python Celery declared in the
// capture (testdata/wire/amqp/<version>/producer_topology_*.json), with and without
// task_queue_max_priority.
func TestTopologyMatchesCelery(t *testing.T) {
	for _, tc := range []struct {
		file string
		cfg  Config
	}{
		{"producer_topology_producer.json", Config{}},
		{"producer_topology_maxprio.json", Config{QueueMaxPriority: 10}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("..", "..", "testdata", "wire", "amqp", "5.7.0", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var want struct {
				Exchanges, Queues, Bindings []map[string]any
			}
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			tr, v := newTransport(t, tc.cfg)
			publish(t, tr, taskMsg("celery", 1), taskMsg("other", 2))
			exItems := []string{"name", "type", "durable", "auto_delete", "internal", "arguments"}
			qItems := []string{"name", "durable", "auto_delete", "exclusive", "arguments"}
			bItems := []string{"source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"}
			check := func(what string, want, got []map[string]any, items []string) {
				if diff := cmp.Diff(norm(want, items), norm(got, items)); diff != "" {
					t.Errorf("%s (-python +go):\n%s", what, diff)
				}
			}
			check("exchanges", want.Exchanges, v.List(t, "list_exchanges", exItems...), exItems)
			check("queues", want.Queues, v.List(t, "list_queues", qItems...), qItems)
			check("bindings", want.Bindings, v.List(t, "list_bindings", bItems...), bItems)
		})
	}
}

// norm keeps items of the rows about the celery and other queues and exchanges (not the
// broker's amq.* and default exchanges, nor Python's result reply queues), as sorted JSON text.
func norm(rows []map[string]any, items []string) []string {
	var out []string
	for _, r := range rows {
		name, _ := r["name"].(string)
		if name == "" {
			name, _ = r["destination_name"].(string)
			if src, _ := r["source_name"].(string); src == "" {
				continue // the default exchange's implicit binding
			}
		}
		if name != "celery" && name != "other" {
			continue
		}
		kept := map[string]any{}
		for _, it := range items {
			kept[it] = r[it]
		}
		if args, ok := kept["arguments"].([]any); ok {
			kept["arguments"] = argNames(args)
		}
		b, _ := json.Marshal(kept)
		out = append(out, string(b))
	}
	sort.Strings(out)
	return out
}

// argNames reduces arguments (lists of [name, value] or [name, type, value]) to "name=value".
func argNames(args []any) []string {
	var out []string
	for _, a := range args {
		l, _ := a.([]any)
		if len(l) < 2 {
			continue
		}
		b, _ := json.Marshal(l[len(l)-1])
		out = append(out, l[0].(string)+"="+string(b))
	}
	sort.Strings(out)
	return out
}
