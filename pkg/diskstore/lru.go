package diskstore

import (
	"math"
	"slices"
)

// lru is the index's recency order: a doubly linked list threaded through a
// slice by int32 positions, plus a map from key to position.
//
// It stands in for github.com/hashicorp/golang-lru/v2 on purpose. That
// library's list element carries three pointers and an unused expiry time
// (128 bytes) and its map holds a pointer per entry; measured at a million
// entries it took 245 bytes per entry and gave the garbage collector two
// million pointers to scan. Here an entry is a 72-byte slot in one
// pointer-free slice and a 40-byte map slot; with the spare room of the
// slice and the map, BenchmarkIndexMemory measures 185 bytes per entry.
type lru struct {
	slots []slot
	free  []int32 // positions of removed slots, for reuse
	pos   map[key]int32
	head  int32 // most recently used, or none
	tail  int32 // least recently used, or none
	tails map[key]*[32]byte
}

const none = -1

// slot is one entry: its key, record and list links.
type slot struct {
	key        key
	size       int64
	used       int64
	prev, next int32
	mediaType  uint8
	public     bool
}

func newLRU() *lru {
	return &lru{pos: make(map[key]int32), head: none, tail: none, tails: make(map[key]*[32]byte)}
}

func (l *lru) Len() int { return len(l.pos) }

func (l *lru) record(i int32) record {
	s := &l.slots[i]
	return record{size: s.size, used: s.used, mediaType: s.mediaType, public: s.public, tail: l.tails[s.key]}
}

// Peek returns k's record without changing the order.
func (l *lru) Peek(k key) (record, bool) {
	i, ok := l.pos[k]
	if !ok {
		return record{}, false
	}
	return l.record(i), true
}

// Add inserts or replaces k's record and makes it the most recently used.
func (l *lru) Add(k key, r record) {
	i, ok := l.pos[k]
	if ok {
		l.unlink(i)
	} else {
		i = l.alloc()
		l.pos[k] = i
	}
	l.slots[i] = slot{key: k, size: r.size, used: r.used, mediaType: r.mediaType, public: r.public, prev: none, next: none}
	if r.tail != nil {
		l.tails[k] = r.tail
	}
	l.pushFront(i)
}

// SetPublic marks k public without changing the order.
func (l *lru) SetPublic(k key) {
	if i, ok := l.pos[k]; ok {
		l.slots[i].public = true
	}
}

// Remove deletes k.
func (l *lru) Remove(k key) {
	i, ok := l.pos[k]
	if !ok {
		return
	}
	l.unlink(i)
	delete(l.pos, k)
	delete(l.tails, k)
	l.slots[i] = slot{prev: none, next: none}
	l.free = append(l.free, i)
}

// GetOldest returns the least recently used entry.
func (l *lru) GetOldest() (key, record, bool) {
	if l.tail == none {
		return key{}, record{}, false
	}
	return l.slots[l.tail].key, l.record(l.tail), true
}

// RemoveOldest removes and returns the least recently used entry.
func (l *lru) RemoveOldest() (key, record, bool) {
	k, r, ok := l.GetOldest()
	if ok {
		l.Remove(k)
	}
	return k, r, ok
}

func (l *lru) alloc() int32 {
	if n := len(l.free); n > 0 {
		i := l.free[n-1]
		l.free = l.free[:n-1]
		return i
	}
	l.slots = append(l.slots, slot{})
	return int32(len(l.slots) - 1)
}

func (l *lru) pushFront(i int32) {
	l.slots[i].prev, l.slots[i].next = none, l.head
	if l.head != none {
		l.slots[l.head].prev = i
	}
	l.head = i
	if l.tail == none {
		l.tail = i
	}
}

func (l *lru) unlink(i int32) {
	s := &l.slots[i]
	if s.prev != none {
		l.slots[s.prev].next = s.next
	} else {
		l.head = s.next
	}
	if s.next != none {
		l.slots[s.next].prev = s.prev
	} else {
		l.tail = s.prev
	}
	s.prev, s.next = none, none
}

// load replaces the index with slots, ordered by their last use: one sort
// and one pass, rather than an Add per entry. It is how Open builds the
// index; tails holds the second halves of the sha512 keys. The slots stay
// where they are; what is sorted is one word per slot, its last use above
// its position, which sorts far faster than the 72-byte slots.
func (l *lru) load(slots []slot, tails map[key]*[32]byte) {
	l.slots, l.free, l.tails = slots, nil, tails
	l.pos = make(map[key]int32, len(slots))
	l.head, l.tail = none, none
	if len(slots) == 0 {
		return
	}
	oldest := slots[0].used
	for i := range slots {
		oldest = min(oldest, slots[i].used)
	}
	order := make([]uint64, len(slots))
	for i := range slots {
		// Seconds past the oldest use fit 32 bits for 136 years; a
		// stranger mtime only loses its place among the newest.
		since := uint64(min(slots[i].used-oldest, math.MaxUint32))
		order[i] = since<<32 | uint64(i)
	}
	slices.Sort(order)
	dup := false
	for _, o := range order {
		i := int32(uint32(o))
		n := len(l.pos)
		l.pos[slots[i].key] = i
		dup = dup || len(l.pos) == n
		l.pushFront(i)
	}
	if dup {
		l.dropDuplicates()
	}
}

// dropDuplicates frees the slots of keys listed more than once by load,
// keeping the most recently used of each (the one pos holds). A directory
// read while its names are removed and created again may list a name
// twice: on btrfs or tmpfs a name created again takes a new, later place.
// A key twice in the order would leave a slot no Remove reaches, whose
// bytes an eviction would take off used again and again.
func (l *lru) dropDuplicates() {
	for i := l.head; i != none; {
		next := l.slots[i].next
		if l.pos[l.slots[i].key] != i {
			l.unlink(i)
			l.slots[i] = slot{prev: none, next: none}
			l.free = append(l.free, i)
		}
		i = next
	}
}
