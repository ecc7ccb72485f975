package loadtest

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Report is the outcome of a run: the original's submission summary and the consistency check
// the original document does by hand. It encodes to JSON (the command's -json flag).
type Report struct {
	Submission SubmitSummary `json:"submission"`

	Source     string         `json:"source,omitempty"`    // where callbacks were counted
	Submitted  int            `json:"submitted"`           // accepted submissions
	Processed  int            `json:"processed"`           // of them, SUCCESS or FAILURE in the backend
	States     map[string]int `json:"states,omitempty"`    // backend state → tasks
	Callbacks  int            `json:"callbacks"`           // of them, tasks with a callback
	ByStatus   map[string]int `json:"by_status,omitempty"` // callback status → tasks
	Duplicates int            `json:"duplicates"`          // extra callbacks in the store (must be 0)
	// Suppressed is how many duplicate deliveries the receiver got during the run and did not
	// store again (from its totals; -1 when unknown). Retries after a timeout or a restart make
	// them; they are harmless.
	Suppressed       int      `json:"suppressed_duplicates"`
	MissingCallbacks []string `json:"missing_callbacks,omitempty"` // business ids without a callback
	NotProcessed     []string `json:"not_processed,omitempty"`     // business ids not SUCCESS/FAILURE
	DuplicateIDs     []string `json:"duplicate_ids,omitempty"`     // business ids with >1 callback
	// DeadLettered are the business ids whose callback the worker gave up on (in the callback
	// outbox's dead letters): each is also a missing callback, with a known cause, and can be
	// replayed (POST /callbacks/dead/replay on the Go API). DeadLetterError says why the
	// outbox could not be read, when it could not.
	DeadLettered    []string `json:"dead_lettered_callbacks,omitempty"`
	DeadLetterError string   `json:"dead_letter_error,omitempty"`

	// Latency from sending a task's submission to its callback's arrival.
	LatencyP50 time.Duration `json:"latency_p50_ns"`
	LatencyP95 time.Duration `json:"latency_p95_ns"`
	LatencyP99 time.Duration `json:"latency_p99_ns"`
	LatencyMax time.Duration `json:"latency_max_ns"`
	// EndToEnd is from the first submission to the last callback; TasksPerSecond divides the
	// tasks with a callback by it.
	EndToEnd       time.Duration `json:"end_to_end_ns"`
	TasksPerSecond float64       `json:"tasks_per_second"`
	WaitSeconds    float64       `json:"wait_seconds"`

	TimedOut  bool   `json:"timed_out,omitempty"`
	WaitError string `json:"wait_error,omitempty"`
}

func (r *Report) fill(sub *Submission, obs *Observations, proc *Processed, src Source) {
	r.Source = src.Describe()
	accepted := sub.Accepted()
	r.Submitted = len(accepted)
	r.Processed = proc.Count()
	r.States = map[string]int{}
	for st, n := range proc.ByState {
		r.States[string(st)] = n
	}
	r.NotProcessed = proc.Missing
	r.ByStatus = map[string]int{}
	r.Suppressed = -1
	if obs.Before != nil && obs.After != nil {
		r.Suppressed = int(obs.After.Duplicates - obs.Before.Duplicates)
		if r.Suppressed < 0 { // the receiver restarted with an empty store
			r.Suppressed = int(obs.After.Duplicates)
		}
	}
	r.WaitSeconds = obs.Duration.Seconds()
	var lat []time.Duration
	var last time.Time
	for _, t := range accepted {
		o, ok := obs.Tasks[t.BusinessTaskID]
		if !ok || o.Callbacks == 0 {
			r.MissingCallbacks = append(r.MissingCallbacks, t.BusinessTaskID)
			continue
		}
		r.Callbacks++
		if o.Callbacks > 1 {
			r.Duplicates += o.Callbacks - 1
			r.DuplicateIDs = append(r.DuplicateIDs, t.BusinessTaskID)
		}
		if len(o.Statuses) > 0 {
			r.ByStatus[o.Statuses[0]]++
		}
		if !o.FirstAt.IsZero() {
			lat = append(lat, max(0, o.FirstAt.Sub(t.SubmittedAt)))
			if o.FirstAt.After(last) {
				last = o.FirstAt
			}
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.LatencyP50 = percentile(lat, 50)
	r.LatencyP95 = percentile(lat, 95)
	r.LatencyP99 = percentile(lat, 99)
	if len(lat) > 0 {
		r.LatencyMax = lat[len(lat)-1]
	}
	if !last.IsZero() && !sub.Start.IsZero() {
		r.EndToEnd = last.Sub(sub.Start)
		if r.EndToEnd > 0 {
			r.TasksPerSecond = float64(r.Callbacks) / r.EndToEnd.Seconds()
		}
	}
}

// percentile is the nearest-rank percentile of sorted durations (0 when empty).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Consistent reports whether submitted = processed = callbacks received, with nothing missing,
// no duplicate in the store, at least one task, and no timeout.
func (r *Report) Consistent() bool {
	return r.Submitted > 0 && r.Processed == r.Submitted && r.Callbacks == r.Submitted &&
		r.Duplicates == 0 && len(r.MissingCallbacks) == 0 && len(r.NotProcessed) == 0 && !r.TimedOut
}

// Verdict is the report's last line.
func (r *Report) Verdict() string {
	if r.Consistent() {
		return fmt.Sprintf("CONSISTENT: submitted = processed = callbacks received = %d, no duplicates", r.Submitted)
	}
	var why []string
	if r.Submitted == 0 {
		why = append(why, "nothing was submitted")
	}
	if r.Processed != r.Submitted {
		why = append(why, fmt.Sprintf("processed %d of %d", r.Processed, r.Submitted))
	}
	if r.Callbacks != r.Submitted {
		why = append(why, fmt.Sprintf("callbacks for %d of %d", r.Callbacks, r.Submitted))
	}
	if len(r.DeadLettered) > 0 {
		why = append(why, fmt.Sprintf("%d callbacks dead-lettered (replay: POST /callbacks/dead/replay on the API)", len(r.DeadLettered)))
	}
	if r.Duplicates > 0 {
		why = append(why, fmt.Sprintf("%d duplicate callbacks in the store", r.Duplicates))
	}
	if r.TimedOut {
		why = append(why, "timed out")
	}
	return "INCONSISTENT: " + strings.Join(why, ", ")
}

// PrintSubmission writes the original's submission summary.
func (r *Report) PrintSubmission(w io.Writer) {
	s := r.Submission
	fmt.Fprintf(w, "\n===== submission summary =====\n")
	fmt.Fprintf(w, "total tasks:  %d\n", s.Total)
	fmt.Fprintf(w, "succeeded:    %d\n", s.Succeeded)
	fmt.Fprintf(w, "failed:       %d\n", s.Failed)
	fmt.Fprintf(w, "seconds:      %.3f (%.0f requests/s, concurrency %d)\n", s.Seconds, s.RequestsPerSecond, s.Concurrency)
	for _, e := range s.Errors {
		fmt.Fprintf(w, "  %s\n", e)
	}
}

// Print writes the submission summary and the consistency report.
func (r *Report) Print(w io.Writer) {
	r.PrintSubmission(w)
	fmt.Fprintf(w, "\n===== consistency report =====\n")
	if r.Source != "" {
		fmt.Fprintf(w, "callbacks counted by: %s\n", r.Source)
	}
	fmt.Fprintf(w, "submitted:            %d\n", r.Submitted)
	fmt.Fprintf(w, "processed:            %d (result backend: %s)\n", r.Processed, formatCounts(r.States))
	fmt.Fprintf(w, "callbacks received:   %d (%s)\n", r.Callbacks, formatCounts(r.ByStatus))
	sup := "unknown"
	if r.Suppressed >= 0 {
		sup = fmt.Sprint(r.Suppressed)
	}
	fmt.Fprintf(w, "duplicates:           %d in the store; duplicate deliveries suppressed by the receiver: %s\n", r.Duplicates, sup)
	fmt.Fprintf(w, "missing callbacks:    %d%s\n", len(r.MissingCallbacks), listIDs(r.MissingCallbacks))
	fmt.Fprintf(w, "not processed:        %d%s\n", len(r.NotProcessed), listIDs(r.NotProcessed))
	switch {
	case r.DeadLetterError != "":
		fmt.Fprintf(w, "dead-lettered:        unknown (%s)\n", r.DeadLetterError)
	case len(r.DeadLettered) > 0:
		fmt.Fprintf(w, "dead-lettered:        %d%s; replay: POST /callbacks/dead/replay on the API\n", len(r.DeadLettered), listIDs(r.DeadLettered))
	default:
		fmt.Fprintf(w, "dead-lettered:        0\n")
	}
	if len(r.DuplicateIDs) > 0 {
		fmt.Fprintf(w, "duplicated ids:      %s\n", listIDs(r.DuplicateIDs))
	}
	fmt.Fprintf(w, "submit→callback:      p50 %s, p95 %s, p99 %s, max %s\n",
		fmtDur(r.LatencyP50), fmtDur(r.LatencyP95), fmtDur(r.LatencyP99), fmtDur(r.LatencyMax))
	if r.EndToEnd > 0 {
		fmt.Fprintf(w, "end to end:           %d tasks in %.3f s from the first submission to the last callback (%.0f tasks/s)\n",
			r.Callbacks, r.EndToEnd.Seconds(), r.TasksPerSecond)
	}
	if r.WaitError != "" {
		fmt.Fprintf(w, "wait:                 %s\n", r.WaitError)
	}
	fmt.Fprintf(w, "result:               %s\n", r.Verdict())
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := sortedIDs(m)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// listIDs shows up to ten ids.
func listIDs(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	const show = 10
	s := ": " + strings.Join(ids[:min(len(ids), show)], " ")
	if len(ids) > show {
		s += fmt.Sprintf(" … and %d more", len(ids)-show)
	}
	return s
}
