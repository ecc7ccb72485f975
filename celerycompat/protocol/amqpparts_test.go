package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestPartsMatchPythonHeaders: for every envelope captured from real Celery, the header table
// EncodeParts writes for the decoded message holds the same headers, by meaning, that Python
// wrote, and DecodeParts gives back the message Decode gave.
func TestPartsMatchPythonHeaders(t *testing.T) {
	vectors := wireVectors(t)
	if len(vectors) == 0 {
		t.Fatal("no wire vectors under testdata/wire: they are committed, so the tree is broken")
	}
	for name, raw := range vectors {
		t.Run(filepath.Base(filepath.Dir(name))+"/"+filepath.Base(name), func(t *testing.T) {
			c := Codec{}
			ver := filepath.Base(filepath.Dir(name))
			if ver == "go" { // go/<version>-<case>.msg.json
				ver, _, _ = strings.Cut(filepath.Base(name), "-")
				ver += ".0"
			}
			if v, err := ParseVersion(ver); err == nil {
				c.PeerVersion = v
			}
			base := filepath.Base(name)
			m, err := c.Decode(raw)
			if strings.HasPrefix(base, "serializer_pickle") {
				// The one captured case nothing may run: it must be refused as such.
				if !errors.Is(err, ErrUnsupportedContentType) {
					t.Fatalf("pickle vector: Decode error %v, want ErrUnsupportedContentType", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			m.ExtraProperties = nil // AMQP has no place for them
			p, err := c.EncodeParts(m)
			if strings.HasPrefix(base, "compression_bzip2") {
				// bzip2 is decode-only, as in Encode: EncodeParts must refuse it, not write it.
				if !errors.Is(err, ErrUnsupportedCompression) {
					t.Fatalf("bzip2 vector: EncodeParts error %v, want ErrUnsupportedCompression", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("EncodeParts: %v", err)
			}
			var env struct {
				Headers map[string]any `json:"headers"`
			}
			d := json.NewDecoder(bytes.NewReader(raw))
			d.UseNumber()
			if err := d.Decode(&env); err != nil {
				t.Fatal(err)
			}
			if v, ok := env.Headers["ignore_result"]; ok && v == nil {
				env.Headers["ignore_result"] = false // send_task of an unregistered task: null, read as false (as Encode writes it)
			}
			if diff := cmp.Diff(viaJSON(t, env.Headers), viaJSON(t, p.Headers)); diff != "" {
				t.Errorf("headers (-python +parts):\n%s", diff)
			}
			if p.CorrelationID != m.ID || p.DeliveryMode != 2 || int(p.Priority) != m.Priority {
				t.Errorf("properties %+v", p)
			}
			back, envBack, err := c.DecodeParts(p, m.DeliveryInfo.Exchange, m.DeliveryInfo.RoutingKey, m.DeliveryTag, false)
			if err != nil {
				t.Fatalf("DecodeParts: %v\n%s", err, envBack)
			}
			m.BodyEncoding, back.BodyEncoding = "", ""
			if diff := cmp.Diff(viaJSON(t, m), viaJSON(t, back)); diff != "" {
				t.Errorf("DecodeParts(EncodeParts(m)) (-m +back):\n%s", diff)
			}
		})
	}
}

func viaJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPartsErrors(t *testing.T) {
	c := Codec{}
	ok := &Message{Task: "t", ID: "1"}
	if _, err := c.EncodeParts(ok); err != nil {
		t.Fatalf("minimal message: %v", err)
	}
	for name, m := range map[string]*Message{
		"extra property": {Task: "t", ID: "1", ExtraProperties: map[string]json.RawMessage{"x": []byte("1")}},
		"priority":       {Task: "t", ID: "1", Priority: 256},
		"no id":          {Task: "t"},
		"bad extra":      {Task: "t", ID: "1", ExtraHeaders: map[string]json.RawMessage{"x": []byte("{")}},
	} {
		if _, err := c.EncodeParts(m); !errors.Is(err, ErrEncode) {
			t.Errorf("%s: %v, want ErrEncode", name, err)
		}
	}
	bad := []struct {
		name, field string
		p           Parts
	}{
		{"pickle", "content-type", Parts{ContentType: ContentTypePickle, Headers: map[string]any{"task": "t", "id": "1"}, Body: []byte("x")}},
		{"bad json", "body", Parts{ContentType: ContentTypeJSON, Headers: map[string]any{"task": "t", "id": "1"}, Body: []byte("[1")}},
		{"odd header", "headers.x", Parts{Headers: map[string]any{"task": "t", "id": "1", "x": struct{}{}}, Body: []byte("[[], {}, {}]")}},
		{"too large", "body", Parts{Headers: map[string]any{"task": "t", "id": "1"}, Body: make([]byte, 100)}},
	}
	for _, b := range bad {
		c := Codec{}
		if b.name == "too large" {
			c.MaxBodySize = 10
		}
		_, _, err := c.DecodeParts(&b.p, "", "celery", "1.1", false)
		var de *DecodeError
		if !errors.As(err, &de) || !strings.HasPrefix(de.Field, b.field) {
			t.Errorf("%s: %v, want a *DecodeError on %s", b.name, err, b.field)
		}
	}
}

// FuzzDecodeParts: any body and content type decode to a message or an error, never a panic,
// and a decoded message encodes and decodes again.
func FuzzDecodeParts(f *testing.F) {
	f.Add("application/json", []byte(`[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`), "t", "1", "")
	f.Add("application/json", []byte(`{"task": "t", "id": "1", "args": [], "kwargs": {}}`), "", "", "")
	f.Add("application/x-msgpack", []byte{0x93, 0x90, 0x80, 0x80}, "t", "1", "application/x-gzip")
	f.Fuzz(func(t *testing.T, ct string, body []byte, task, id, comp string) {
		h := map[string]any{}
		if task != "" {
			h["task"], h["id"] = task, id
		}
		if comp != "" {
			h["compression"] = comp
		}
		c := Codec{}
		m, _, err := c.DecodeParts(&Parts{ContentType: ct, Headers: h, Body: body}, "", "q", "1.1", true)
		if err != nil {
			return
		}
		p, err := c.EncodeParts(m)
		if err != nil {
			return // some decodable values are not encodable (e.g. bzip2 compression)
		}
		if _, _, err := c.DecodeParts(p, "", "q", "1.1", true); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
