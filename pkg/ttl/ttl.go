// Package ttl holds time-based expiry with an injected clock: a bounded
// expiring map that can still hand out stale values (for stale-if-error),
// and the idle-expiry rule that the store's sweeper applies.
//
// It does no I/O and starts no goroutines or timers: expiry is checked
// lazily when a value is read, so the cost stays flat however many entries
// there are. It is not a general cache: values are small records (a tag's
// digest, an authorization decision), never content.
package ttl

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// DefaultMaxEntries bounds a Map so that a client cycling through tags cannot
// grow the daemon's memory without limit; 65536 records of a few hundred
// bytes each is a few tens of MiB at worst.
const DefaultMaxEntries = 1 << 16

// Map is a size-bounded map whose entries are fresh for a fixed duration
// after they are set, then stale until they expire or are evicted by newer
// entries. The least recently set or read entries are evicted first. It is
// safe for concurrent use.
type Map[K comparable, V any] struct {
	fresh time.Duration
	keep  time.Duration // 0: until evicted
	now   func() time.Time

	// mu guards entries.
	mu      sync.Mutex
	entries *simplelru.LRU[K, entry[V]]
}

type entry[V any] struct {
	value V
	set   time.Time
}

// NewMap returns a Map whose entries are fresh for the given duration after
// they are set and are kept, stale, until keep has passed. A zero fresh
// means entries are never fresh: every Get reports stale, so callers always
// revalidate but can still fall back to the last value. A zero keep keeps
// entries until they are evicted. maxEntries <= 0 means DefaultMaxEntries.
// A nil clock means time.Now.
func NewMap[K comparable, V any](fresh, keep time.Duration, maxEntries int, now func() time.Time) *Map[K, V] {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	if now == nil {
		now = time.Now
	}
	lru, err := simplelru.NewLRU[K, entry[V]](maxEntries, nil)
	if err != nil {
		panic(err) // unreachable: size is positive
	}
	return &Map[K, V]{fresh: fresh, keep: keep, now: now, entries: lru}
}

// Set stores v under k, fresh from now.
func (m *Map[K, V]) Set(k K, v V) {
	e := entry[V]{value: v, set: m.now()}
	m.mu.Lock()
	m.entries.Add(k, e)
	m.mu.Unlock()
}

// Get returns the value stored under k, whether it is still fresh, and
// whether there was a value at all (an expired one is removed).
func (m *Map[K, V]) Get(k K) (v V, fresh, ok bool) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries.Get(k)
	if !ok {
		return v, false, false
	}
	age := now.Sub(e.set)
	if m.keep > 0 && age > m.keep {
		m.entries.Remove(k)
		return v, false, false
	}
	return e.value, age < m.fresh, true
}

// Delete removes k.
func (m *Map[K, V]) Delete(k K) {
	m.mu.Lock()
	m.entries.Remove(k)
	m.mu.Unlock()
}

// Each calls fn with every key and value not past keep, from a copy
// taken under the lock, without counting it as a use.
func (m *Map[K, V]) Each(fn func(K, V)) {
	now := m.now()
	type kv struct {
		k K
		v V
	}
	m.mu.Lock()
	all := make([]kv, 0, m.entries.Len())
	for _, k := range m.entries.Keys() {
		if e, ok := m.entries.Peek(k); ok && (m.keep <= 0 || now.Sub(e.set) <= m.keep) {
			all = append(all, kv{k, e.value})
		}
	}
	m.mu.Unlock()
	for _, e := range all {
		fn(e.k, e.v)
	}
}

// Len returns the number of entries, fresh or stale.
func (m *Map[K, V]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.entries.Len()
}

// Idle is the idle-expiry rule: an entry unused for longer than TTL has
// expired. A zero TTL disables expiry. The store keeps entries in recency
// order, so a sweep applying this rule stops at the first entry that has
// not expired and costs nothing per live entry.
type Idle struct {
	TTL time.Duration
	Now func() time.Time
}

// Expired reports whether an entry last used at lastUse has expired.
func (p Idle) Expired(lastUse time.Time) bool {
	return p.TTL > 0 && p.Now().Sub(lastUse) > p.TTL
}
