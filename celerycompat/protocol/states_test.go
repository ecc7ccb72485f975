package protocol

import "testing"

func TestStateSets(t *testing.T) {
	tests := []struct {
		s                          State
		ready, propagates, isExcep bool
	}{
		{StatePending, false, false, false},
		{StateReceived, false, false, false},
		{StateStarted, false, false, false},
		{StateSuccess, true, false, false},
		{StateFailure, true, true, true},
		{StateRetry, false, false, true},
		{StateRevoked, true, true, true},
		{StateRejected, false, false, false},
		{StateIgnored, false, false, false},
		{"PROGRESS", false, false, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.s), func(t *testing.T) {
			if got := tt.s.Ready(); got != tt.ready {
				t.Errorf("Ready = %v", got)
			}
			if got := tt.s.Propagates(); got != tt.propagates {
				t.Errorf("Propagates = %v", got)
			}
			if got := tt.s.IsException(); got != tt.isExcep {
				t.Errorf("IsException = %v", got)
			}
		})
	}
}
