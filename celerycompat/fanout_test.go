package celerycompat_test

import (
	"context"
	"errors"
	"testing"

	cc "github.com/celerybridge/celerybridge/celerycompat"
)

// tasksOnly is a Transport that carries tasks but neither remote control nor events.
type tasksOnly struct{}

func (tasksOnly) PublishBatch(_ context.Context, msgs []*cc.Message) []error {
	return make([]error, len(msgs))
}

func (tasksOnly) Consume(context.Context, cc.ConsumerConfig) (cc.Consumer, error) {
	return nil, errors.New("not consuming")
}

func (tasksOnly) Codec() cc.Codec { return cc.Codec{} }

// TestFanoutDiscovery: NewControl and NewWorker find remote control and events through the
// optional FanoutTransport interface: *Broker has it; a tasks-only transport gets a typed error
// for what needs it (NewControl, SendEvents) and runs tasks without the rest.
func TestFanoutDiscovery(t *testing.T) {
	var _ cc.FanoutTransport = (*cc.Broker)(nil)
	if _, err := cc.NewControl(tasksOnly{}, cc.ControlConfig{}); !errors.Is(err, cc.ErrInvalidConfig) {
		t.Errorf("NewControl on a tasks-only transport: %v, want ErrInvalidConfig", err)
	}
	if _, err := cc.NewControl(nil, cc.ControlConfig{}); !errors.Is(err, cc.ErrInvalidConfig) {
		t.Errorf("NewControl(nil): %v, want ErrInvalidConfig", err)
	}
	if _, err := cc.NewWorker(tasksOnly{}, cc.WorkerConfig{SendEvents: true}); !errors.Is(err, cc.ErrInvalidConfig) {
		t.Errorf("NewWorker with SendEvents on a tasks-only transport: %v, want ErrInvalidConfig", err)
	}
	if _, err := cc.NewWorker(tasksOnly{}, cc.WorkerConfig{}); err != nil {
		t.Errorf("NewWorker on a tasks-only transport: %v", err)
	}
}
