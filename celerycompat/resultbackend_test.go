package celerycompat_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// recordingBackend is a ResultBackend that keeps every StoreState call and serves the states
// stored, with a reply queue like rpc://'s.
type recordingBackend struct {
	mu     sync.Mutex
	stores []recordedStore
	metas  map[string]cc.ResultMeta
	stored chan struct{}
}

type recordedStore struct {
	replyTo, correlationID string
	meta                   cc.ResultMeta
}

func newRecordingBackend() *recordingBackend {
	return &recordingBackend{metas: map[string]cc.ResultMeta{}, stored: make(chan struct{}, 100)}
}

func (b *recordingBackend) ReplyQueue() string { return "reply-queue-of-the-client" }

func (b *recordingBackend) StoreState(_ context.Context, req *cc.Message, meta cc.ResultMeta) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := recordedStore{meta: meta}
	if req != nil {
		r.replyTo, r.correlationID = req.ReplyTo, req.CorrelationID
	}
	b.stores = append(b.stores, r)
	b.metas[meta.TaskID] = meta
	b.stored <- struct{}{}
	return true, nil
}

func (b *recordingBackend) GetMeta(_ context.Context, id string) (*cc.ResultMeta, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m, ok := b.metas[id]; ok {
		return &m, nil
	}
	return &cc.ResultMeta{TaskID: id, Status: cc.StatePending}, nil
}

func (b *recordingBackend) WaitMeta(ctx context.Context, id string) (*cc.ResultMeta, error) {
	for {
		if m, _ := b.GetMeta(ctx, id); m.Status.Ready() {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (b *recordingBackend) Forget(_ context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.metas, id)
	return nil
}

// TestResultBackendSeam: a Worker and Producer take any ResultBackend. The producer puts the
// backend's reply queue in reply_to, the worker stores STARTED and SUCCESS with the request
// (reply_to, correlation_id) the rpc backend addresses them by, the handle reads them back, and
// a chord is refused with ErrChordUnsupported (only the Redis *Backend counts chords).
func TestResultBackendSeam(t *testing.T) {
	s := newWStack(t, cc.BrokerConfig{})
	rb := newRecordingBackend()
	p, err := cc.NewProducer(s.broker, cc.ProducerConfig{Backend: rb})
	if err != nil {
		t.Fatal(err)
	}
	w := s.newWorker(cc.WorkerConfig{Backend: rb, TrackStarted: true})
	if err := w.Register("seam.add", cc.HandlerFunc(func(context.Context, *cc.Request) (any, error) { return 3, nil })); err != nil {
		t.Fatal(err)
	}
	runWorker(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := p.Send(ctx, "seam.add", []any{1, 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := res.Get(ctx)
	if err != nil || got != 3 {
		t.Fatalf("Get: %v, %v", got, err)
	}
	rb.mu.Lock()
	stores := append([]recordedStore(nil), rb.stores...)
	rb.mu.Unlock()
	if len(stores) != 2 || stores[0].meta.Status != cc.StateStarted || stores[1].meta.Status != cc.StateSuccess {
		t.Fatalf("stores %+v, want STARTED then SUCCESS", stores)
	}
	for _, st := range stores {
		if st.replyTo != rb.ReplyQueue() || st.correlationID != res.ID {
			t.Errorf("%s stored with reply_to %q correlation_id %q, want %q and %q", st.meta.Status, st.replyTo, st.correlationID, rb.ReplyQueue(), res.ID)
		}
	}
	_, err = p.SendChord(ctx, []cc.Signature{{Task: "seam.add"}}, cc.Signature{Task: "seam.add"})
	if !errors.Is(err, cc.ErrChordUnsupported) {
		t.Errorf("SendChord: %v, want ErrChordUnsupported", err)
	}
	// A nil *Backend still means "no backend", as before the interface.
	var none *cc.Backend
	if _, err := cc.NewProducer(s.broker, cc.ProducerConfig{Backend: none}); err != nil {
		t.Errorf("NewProducer with a nil *Backend: %v", err)
	}
}
