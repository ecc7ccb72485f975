package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/celerybridge/celerybridge/callback"
)

// recorder is a CommitFunc that stores ints in a set, records each batch, and can be held.
type recorder struct {
	mu      sync.Mutex
	stored  map[int]bool
	batches [][]int
	gate    chan struct{} // when non-nil, each commit waits for a receive
	entered chan struct{} // when non-nil, each commit signals here first
	fail    error
	short   bool // answer one result too few
}

func (r *recorder) commit(items []int) ([]bool, error) {
	if r.entered != nil {
		r.entered <- struct{}{}
	}
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, append([]int(nil), items...))
	if r.fail != nil {
		return nil, r.fail
	}
	out := make([]bool, len(items))
	for i, it := range items {
		out[i] = !r.stored[it]
		r.stored[it] = true
	}
	if r.short {
		out = out[:len(out)-1]
	}
	return out, nil
}

// TestGroupCommit: Saves that arrive while a commit runs share the next one, at most max of
// them, and each gets its own answer.
func TestGroupCommit(t *testing.T) {
	r := &recorder{stored: map[int]bool{}, gate: make(chan struct{}), entered: make(chan struct{})}
	c := New(4, r.commit)
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { _, err := c.Save(ctx, 100); first <- err }()
	<-r.entered // the first commit holds the writer
	type answer struct {
		item   int
		stored bool
		err    error
	}
	answers := make(chan answer, 10)
	for _, it := range []int{1, 2, 3, 1, 5, 6} {
		go func() { ok, err := c.Save(ctx, it); answers <- answer{it, ok, err} }()
	}
	// All six are queued (the channel holds max=4; the others wait to send) before the gate opens.
	time.Sleep(100 * time.Millisecond)
	// From here on one goroutine lets every commit through, the held first one included, until
	// the test ends. (It used to stop after 2 s of quiet, and this goroutine also sent the first
	// gate: when the helper had let the first commit through, that send found no receiver and the
	// test hung.)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case r.gate <- struct{}{}:
			case <-r.entered:
			case <-stop:
				return
			}
		}
	}()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	storedOnce := map[int]int{}
	for range 6 {
		a := <-answers
		if a.err != nil {
			t.Fatal(a.err)
		}
		if a.stored {
			storedOnce[a.item]++
		}
	}
	if fmt.Sprint(storedOnce) != "map[1:1 2:1 3:1 5:1 6:1]" {
		t.Errorf("stored answers %v: want each item stored once", storedOnce)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.batches) < 3 || len(r.batches) > 4 {
		t.Errorf("batches %v: want the first alone, then the six in batches of at most 4", r.batches)
	}
	for _, b := range r.batches {
		if len(b) > 4 {
			t.Errorf("batch %v holds more than 4", b)
		}
	}
	if len(r.batches[1]) < 2 {
		t.Errorf("batches %v: the Saves that waited were not committed together", r.batches)
	}
	_ = c.Close()
}

// TestCommitError: every Save of a failed commit gets its error, and none is reported stored; a
// commit that answers too few results is an error, not a panic.
func TestCommitError(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    *recorder
		want error
	}{
		{"failed", &recorder{stored: map[int]bool{}, fail: fmt.Errorf("%w: disk full", callback.ErrStore)}, callback.ErrStore},
		{"short answer", &recorder{stored: map[int]bool{}, short: true}, callback.ErrStore},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := New(8, tt.r.commit)
			defer c.Close()
			ok, err := c.Save(context.Background(), 1)
			if ok || !errors.Is(err, tt.want) {
				t.Errorf("Save = %v, %v; want false, %v", ok, err, tt.want)
			}
		})
	}
}

// TestClose: Close commits what is queued before it returns; later Saves and Closes return
// ErrStoreClosed.
func TestClose(t *testing.T) {
	r := &recorder{stored: map[int]bool{}, gate: make(chan struct{}), entered: make(chan struct{})}
	c := New(8, r.commit)
	ctx := context.Background()
	errs := make(chan error, 3)
	save := func(i int) { _, err := c.Save(ctx, i); errs <- err }
	go save(0)
	<-r.entered // the first Save is being committed; queue two more behind it
	go save(1)
	go save(2)
	for deadline := time.Now().Add(5 * time.Second); len(c.reqs) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the Saves were not queued")
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case r.gate <- struct{}{}:
			case <-r.entered:
			case <-stop:
				return
			}
		}
	}()
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("a Save queued before Close: %v", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close = %v", err)
	}
	if _, err := c.Save(ctx, 9); !errors.Is(err, callback.ErrStoreClosed) {
		t.Errorf("Save after Close = %v, want ErrStoreClosed", err)
	}
	if err := c.Close(); !errors.Is(err, callback.ErrStoreClosed) {
		t.Errorf("second Close = %v, want ErrStoreClosed", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.batches {
		n += len(b)
	}
	if n != 3 {
		t.Errorf("committed %v: want the three queued Saves", r.batches)
	}
}

// TestSaveCancelled: a Save whose ctx ends while the writer is busy returns ctx's error.
func TestSaveCancelled(t *testing.T) {
	r := &recorder{stored: map[int]bool{}, gate: make(chan struct{}), entered: make(chan struct{})}
	c := New(1, r.commit)
	go func() { _, _ = c.Save(context.Background(), 1) }()
	<-r.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Save(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Save = %v, want DeadlineExceeded", err)
	}
	stop := make(chan struct{}) // lets commits through until the test ends, however slow the machine
	defer close(stop)
	go func() {
		for {
			select {
			case r.gate <- struct{}{}:
			case <-r.entered:
			case <-stop:
				return
			}
		}
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}
