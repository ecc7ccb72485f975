package callback

import (
	"context"
	"slices"
	"sync"
)

// Store keeps the callbacks a receiver accepted, once per event id. Implementations must be safe
// for concurrent use.
type Store interface {
	// Save stores cb unless a callback with the same EventID is stored. inserted is false for a
	// duplicate, which the store counts (StoreStats.Duplicates) but does not store again. When
	// Save returns nil the callback is durable as far as the store promises.
	Save(ctx context.Context, cb Callback) (inserted bool, err error)
	// Seen reports whether a callback with eventID is stored.
	Seen(ctx context.Context, eventID string) (bool, error)
	// ByTaskID returns the callbacks whose TaskID or CeleryTaskID is taskID, oldest first. A
	// task may have several (a failure, then a success after a retry). An empty taskID finds
	// nothing.
	ByTaskID(ctx context.Context, taskID string) ([]Callback, error)
	// Stats counts what the store received.
	Stats(ctx context.Context) (StoreStats, error)
}

// StoreStats counts what a Store received.
type StoreStats struct {
	Received   int64            // every successful Save: Unique + Duplicates
	Unique     int64            // callbacks stored
	Duplicates int64            // Saves of an event id already stored (suppressed)
	ByStatus   map[Status]int64 // stored callbacks per status
}

// MemoryStore is a Store in process memory, for tests and demos. Its zero value is not usable;
// call NewMemoryStore. It is safe for concurrent use.
type MemoryStore struct {
	mu         sync.Mutex
	byID       map[string]int // event id → index in list
	list       []Callback
	duplicates int64
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{byID: map[string]int{}}
}

// Save implements Store.
func (m *MemoryStore) Save(ctx context.Context, cb Callback) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.byID[cb.EventID]; ok {
		m.duplicates++
		return false, nil
	}
	m.byID[cb.EventID] = len(m.list)
	m.list = append(m.list, cb)
	return true, nil
}

// Seen implements Store.
func (m *MemoryStore) Seen(ctx context.Context, eventID string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.byID[eventID]
	return ok, nil
}

// ByTaskID implements Store.
func (m *MemoryStore) ByTaskID(ctx context.Context, taskID string) ([]Callback, error) {
	if taskID == "" {
		return nil, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Callback
	for _, cb := range m.list {
		if cb.TaskID == taskID || cb.CeleryTaskID == taskID {
			out = append(out, cb)
		}
	}
	return out, nil
}

// All returns every stored callback in arrival order.
func (m *MemoryStore) All() []Callback {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.list)
}

// Stats implements Store.
func (m *MemoryStore) Stats(ctx context.Context) (StoreStats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := StoreStats{
		Unique:     int64(len(m.list)),
		Duplicates: m.duplicates,
		ByStatus:   map[Status]int64{},
	}
	s.Received = s.Unique + s.Duplicates
	for _, cb := range m.list {
		s.ByStatus[cb.Status]++
	}
	return s, nil
}
