package e2e

import (
	"fmt"
	"testing"
)

// TestFleetJudge feeds the evidence rules MONITOR lines and checks that only kombu's BRPOP window
// in the killed Python worker excuses a lost task.
func TestFleetJudge(t *testing.T) {
	const (
		id     = "11111111-2222-4333-8444-555555555555"
		other  = "99999999-2222-4333-8444-555555555555"
		api    = "127.0.0.1:7000"
		victim = "127.0.0.1:7001" // its BRPOP connection
		vpipe  = "127.0.0.1:7002" // its connection for the unacked MULTI
	)
	line := func(client, cmd string, args ...string) string {
		s := fmt.Sprintf(`1733348000.123456 [0 %s] "%s"`, client, cmd)
		for _, a := range args {
			s += fmt.Sprintf(` "%s"`, a)
		}
		return s
	}
	msg := func(task string) string { return `{\"headers\": {\"id\": \"` + task + `\"}}` }
	publish := []string{line(api, "evalsha", "abc", "1", task(id)), line("lua", "set", "k", id), line(api, "lpush", "celery", msg(id))}
	brpop := line(victim, "brpop", "celery", "1")
	record := func(task string) string { return line(vpipe, "hset", "unacked", "tag", msg(task)) }
	tests := []struct {
		name      string
		lines     []string // "KILL" marks the kill, "MONFAIL" a broken MONITOR
		lost      []string
		inLists   bool
		victimLog string
		kombu     int
	}{
		{name: "popped by the victim's last BRPOP, never recorded", lines: cat(publish, brpop, "KILL"), lost: []string{id}, kombu: 1},
		{name: "its result read after the run", lines: cat(publish, brpop, "KILL", line("127.0.0.1:7998", "get", "celery-task-meta-"+id)), lost: []string{id}, kombu: 1},
		{name: "its result stored after the run", lines: cat(publish, brpop, "KILL", line("lua", "setex", "celery-task-meta-"+id, "86400", "{}")), lost: []string{id}},
		{name: "BRPOP before the publish", lines: cat([]string{brpop}, publish, "KILL"), lost: []string{id}, kombu: 1},
		{name: "victim recorded after its last BRPOP", lines: cat(publish, brpop, record(other), "KILL"), lost: []string{id}},
		{name: "recorded as un-acked by a Go fetch", lines: cat(publish, brpop, line("lua", "hset", "unacked", "t", msg(id)), "KILL"), lost: []string{id}},
		{name: "recorded by the victim", lines: cat(publish, brpop, record(id), "KILL"), lost: []string{id}},
		{name: "published after the kill", lines: cat([]string{brpop, "KILL"}, publish), lost: []string{id}},
		{name: "never published", lines: []string{brpop, "KILL"}, lost: []string{id}},
		{name: "still in a list", lines: cat(publish, brpop, "KILL"), lost: []string{id}, inLists: true},
		{name: "in the victim's log", lines: cat(publish, brpop, "KILL"), lost: []string{id}, victimLog: "Task tasks.process_task[" + id + "] received"},
		{name: "two lost for one BRPOP", lines: cat(publish, []string{line(api, "lpush", "celery", msg(other))}, brpop, "KILL"), lost: []string{id, other}, kombu: 1},
		{name: "no Python worker killed", lines: cat(publish, brpop), lost: []string{id}},
		{name: "MONITOR broke", lines: cat(publish, brpop, "KILL", "MONFAIL"), lost: []string{id}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &monitor{mentions: map[string][]mention{}, clients: map[string]*clientMarks{}, markers: map[string]int64{}}
			var kill *pyKill
			for _, l := range tt.lines {
				switch l {
				case "KILL":
					m.add(line("127.0.0.1:7999", "echo", "fleet-marker:killed"))
					kill = &pyKill{victim: &proc{name: "py-victim"}, clients: []string{victim, vpipe}, marker: m.markers["killed"]}
				case "MONFAIL":
					m.err = fmt.Errorf("connection reset")
				default:
					m.add(l)
				}
			}
			m.add(line("127.0.0.1:7999", "echo", "fleet-marker:end"))
			inLists := map[string]bool{}
			for _, x := range tt.lost {
				inLists[x] = tt.inLists
			}
			a := m.judge(kill, tt.lost, inLists, tt.victimLog, m.markers["end"])
			if len(a.kombu) != tt.kombu || len(a.ours) != len(tt.lost)-tt.kombu {
				t.Errorf("kombu %q, ours %q; want %d charged to kombu of %d", a.kombu, a.ours, tt.kombu, len(tt.lost))
			}
		})
	}
}

// task is a submission body naming id.
func task(id string) string { return `{\"task_id\": \"` + id + `\"}` }

// cat joins lines and single lines into one list.
func cat(parts ...any) []string {
	var out []string
	for _, p := range parts {
		switch v := p.(type) {
		case []string:
			out = append(out, v...)
		case string:
			out = append(out, v)
		}
	}
	return out
}
