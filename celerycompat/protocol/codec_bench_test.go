package protocol

import (
	"testing"
)

// benchMessage is a typical protocol 2 task: a task id and a small data map as args.
func benchMessage() *Message {
	id := "5d0c8f7e-6b1a-4c2e-9f3d-2a1b0c9d8e7f"
	return &Message{
		Lang: "go", Task: "tasks.process_order", ID: id, RootID: id,
		ArgsRepr: "('7f6e5d4c-3b2a-1908-f7e6-d5c4b3a29180', {...})", KwargsRepr: "{}", Origin: "gen4242@host",
		Args: []any{"7f6e5d4c-3b2a-1908-f7e6-d5c4b3a29180", map[string]any{
			"user_id": 42, "email": "someone@example.com", "amount": 12.5, "tags": []any{"new", "priority"},
		}},
		Kwargs:      map[string]any{},
		ReplyTo:     "cbded464-29f0-30c8-b77a-6bd8ab1024ba",
		DeliveryTag: "ee9b4734-bb8a-43ee-a29c-a21e7038ae3d", DeliveryInfo: DeliveryInfo{RoutingKey: "celery"},
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, bc := range []struct {
		name  string
		codec Codec
	}{{"5.2", Codec{}}, {"5.5", Codec{PeerVersion: Celery55}}} {
		b.Run(bc.name, func(b *testing.B) {
			m := benchMessage()
			out, err := bc.codec.Encode(m)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(out)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.codec.Encode(m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name string
		raw  string
	}{{"go", ""}, {"python A.1", vecA1}} {
		b.Run(bc.name, func(b *testing.B) {
			raw := []byte(bc.raw)
			if bc.raw == "" {
				var err error
				if raw, err = (Codec{PeerVersion: Celery55}).Encode(benchMessage()); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := (Codec{}).Decode(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMarshalValue(b *testing.B) {
	v := benchMessage().Args
	c := Codec{PeerVersion: Celery55}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.MarshalValue(v); err != nil {
			b.Fatal(err)
		}
	}
}
