package amqp

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/celerybridge/celerybridge/celerycompat/protocol"
)

// capture is one testdata/wire/amqp/<version>/producer/<case>.json: messages Python Celery
// published, as a py-amqp consumer received them.
type capture struct {
	Messages []struct {
		DeliveryInfo struct {
			Exch        string `json:"exchange"`
			RK          string `json:"routing_key"`
			Redelivered bool   `json:"redelivered"`
		} `json:"delivery_info"`
		Properties struct {
			ContentType     string         `json:"content_type"`
			ContentEncoding string         `json:"content_encoding"`
			Headers         map[string]any `json:"application_headers"`
			DeliveryMode    uint8          `json:"delivery_mode"`
			Priority        uint8          `json:"priority"`
			CorrelationID   string         `json:"correlation_id"`
			ReplyTo         string         `json:"reply_to"`
			Expiration      string         `json:"expiration"`
		} `json:"properties"`
		BodyText string `json:"body_text"`
	} `json:"messages"`
}

// TestWireVectors: every message captured from Python Celery on RabbitMQ decodes, and the
// message re-encoded by EncodeParts has the headers and properties Python wrote, by meaning.
func TestWireVectors(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "wire", "amqp", "*", "producer", "*.json"))
	if len(files) == 0 {
		t.Fatal("no captures under testdata/wire/amqp/*/producer")
	}
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(filepath.Dir(f)))+"/"+filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var c capture
			d := json.NewDecoder(bytes.NewReader(raw))
			d.UseNumber()
			if err := d.Decode(&c); err != nil {
				t.Fatal(err)
			}
			ver, _ := protocol.ParseVersion(filepath.Base(filepath.Dir(filepath.Dir(f))))
			codec := protocol.Codec{PeerVersion: ver}
			for i, m := range c.Messages {
				pr := m.Properties
				p := &protocol.Parts{Headers: fromTable(toTable(numbers(pr.Headers).(map[string]any))),
					ContentType: pr.ContentType, ContentEncoding: pr.ContentEncoding, CorrelationID: pr.CorrelationID,
					ReplyTo: pr.ReplyTo, Priority: pr.Priority, DeliveryMode: pr.DeliveryMode, Expiration: pr.Expiration,
					Body: []byte(m.BodyText)}
				msg, env, err := codec.DecodeParts(p, m.DeliveryInfo.Exch, m.DeliveryInfo.RK, "1.1", m.DeliveryInfo.Redelivered)
				if err != nil {
					t.Fatalf("message %d: %v\n%s", i, err, env)
				}
				if msg.ID != pr.CorrelationID || msg.Task == "" {
					t.Errorf("message %d: id %q task %q", i, msg.ID, msg.Task)
				}
				back, err := codec.EncodeParts(msg)
				if err != nil {
					t.Fatalf("message %d: EncodeParts: %v", i, err)
				}
				want := numbers(pr.Headers)
				if ir, ok := pr.Headers["ignore_result"]; ok && ir == nil {
					want.(map[string]any)["ignore_result"] = false // null from send_task of an unregistered task
				}
				if diff := cmp.Diff(viaText(want), viaText(back.Headers)); diff != "" {
					t.Errorf("message %d headers (-python +go):\n%s", i, diff)
				}
				got := []any{back.ContentType, back.ContentEncoding, back.DeliveryMode, back.Priority, back.CorrelationID, back.ReplyTo, back.Expiration}
				wantp := []any{pr.ContentType, pr.ContentEncoding, pr.DeliveryMode, pr.Priority, pr.CorrelationID, pr.ReplyTo, pr.Expiration}
				if diff := cmp.Diff(wantp, got); diff != "" {
					t.Errorf("message %d properties (-python +go):\n%s", i, diff)
				}
				if viaText(jsonBody(t, back.Body)) != viaText(jsonBody(t, []byte(m.BodyText))) {
					t.Errorf("message %d body:\n go %s\npy %s", i, back.Body, m.BodyText)
				}
			}
		})
	}
}

// numbers turns json.Number into int64 or float64, as a table holds them.
func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = numbers(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = numbers(x[k])
		}
	}
	return v
}

func viaText(v any) string {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	b, _ = json.Marshal(out)
	return string(b)
}

func jsonBody(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	return v
}
