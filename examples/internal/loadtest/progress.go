package loadtest

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// bar is a progress bar that may be absent.
type bar struct {
	pb *progressbar.ProgressBar
	w  io.Writer
}

func newBar(w io.Writer, max int, desc string) *bar {
	if w == nil {
		return &bar{}
	}
	return &bar{w: w, pb: progressbar.NewOptions(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)}
}

func (b *bar) add() {
	if b.pb != nil {
		_ = b.pb.Add(1) // rendering errors only concern the terminal
	}
}

func (b *bar) set(n int) {
	if b.pb != nil {
		_ = b.pb.Set(n)
	}
}

func (b *bar) finish() {
	if b.pb != nil {
		_ = b.pb.Finish()
	}
}

// exit leaves the bar where it stands (a timeout) and ends its line.
func (b *bar) exit() {
	if b.pb != nil {
		_ = b.pb.Exit()
		fmt.Fprintln(b.w)
	}
}
