package celerycompat

import (
	"testing"
	"time"
)

// BenchmarkEventEncode is the CPU cost per task of its three task events (received, started,
// succeeded) in the publishing goroutine, before base64 and the envelope.
func BenchmarkEventEncode(b *testing.B) {
	var clock lamportClock
	d := &eventDispatcher{hostname: "w@h", pid: 1, clock: &clock, now: time.Now}
	m := &Message{ID: "3547abbc-0000-0000-0000-000000000001", Task: "ev.add", Args: []any{1, 2}, Kwargs: map[string]any{}, RootID: "3547abbc-0000-0000-0000-000000000001"}
	head := d.eventHead()
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		evs := []*event{
			{typ: "task-received", task: true, kind: evReceived, msg: m},
			{typ: "task-started", task: true, kind: evStarted, msg: m},
			{typ: "task-succeeded", task: true, kind: evSucceeded, msg: m, result: 3.0, runtime: 0.001},
		}
		buf = append(buf[:0], '[')
		for i, e := range evs {
			e.clock, e.ts = clock.forward(), time.Now()
			if i > 0 {
				buf = append(buf, ", "...)
			}
			buf, _ = d.appendEvent(buf, e, head, 1)
		}
		buf = append(buf, ']')
	}
}
