package celerycompat

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestBackendErrors: a result backend's Redis failures wrap ErrBackend and not ErrBroker; the
// broker's failures wrap ErrBroker and not ErrBackend.
func TestBackendErrors(t *testing.T) {
	b, r := newTestBackend(t, BackendConfig{})
	br, err := NewBroker(r.Pool(0), BrokerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	r.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	backendCalls := []struct {
		name string
		call func() error
	}{
		{"StoreResult", func() error {
			_, err := b.StoreResult(ctx, ResultMeta{TaskID: "e1", Status: StateSuccess})
			return err
		}},
		{"GetMeta", func() error { _, err := b.GetMeta(ctx, "e1"); return err }},
		{"Forget", func() error { return b.Forget(ctx, "e1") }},
		{"MarkSuccess", func() error { _, err := b.MarkSuccess(ctx, "e1", 1); return err }},
		{"ChordPartReturn", func() error {
			_, _, err := b.ChordPartReturn(ctx, "g1", nil, "e1", StateSuccess, 1)
			return err
		}},
		{"SaveGroup", func() error { return b.SaveGroup(ctx, "g1", []string{"e1"}) }},
	}
	for _, tt := range backendCalls {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, ErrBackend) || errors.Is(err, ErrBroker) {
				t.Fatalf("err = %v, want one wrapping ErrBackend and not ErrBroker", err)
			}
			if !strings.HasPrefix(err.Error(), "celerycompat: result backend: ") {
				t.Errorf("message %q does not start with ErrBackend's", err)
			}
		})
	}

	t.Run("broker", func(t *testing.T) {
		_, err := br.DeadLetters(ctx, 1)
		if !errors.Is(err, ErrBroker) || errors.Is(err, ErrBackend) {
			t.Fatalf("err = %v, want one wrapping ErrBroker and not ErrBackend", err)
		}
	})

	t.Run("closed", func(t *testing.T) {
		b.Close()
		_, err := b.AsyncResult("e2").Get(ctx)
		if !errors.Is(err, ErrBackend) || errors.Is(err, ErrBroker) {
			t.Fatalf("Get after Close err = %v, want one wrapping ErrBackend and not ErrBroker", err)
		}
	})
}
