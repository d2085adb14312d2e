package mirror

import (
	"container/list"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

const (
	// maxMemManifestSize is the largest manifest kept in memory. Image
	// manifests and indexes are a few KiB (a 30-platform index is about
	// 15 KiB); 64 KiB keeps all usual ones and leaves the rare large one,
	// served by sendfile from the store anyway, on disk.
	maxMemManifestSize = 64 << 10
	// DefaultManifestMemory is the byte budget of the manifests kept in
	// memory: 16 MiB holds about 4,000 manifests of 4 KiB, more than the
	// images a node runs, at a small share of the daemon's memory.
	DefaultManifestMemory = 16 << 20
	// memRecheck is how long a store's answer for a manifest in memory is
	// relied on while no entry has left the store (diskstore's
	// Removals): within it a hit asks nothing of the store. Once a second
	// is as often as the store's recency can tell (it keeps use times in
	// seconds), and a removal of any entry ends every such answer at once.
	memRecheck = time.Second
	// memEntryCost is what a copy costs beyond its bytes, charged to the
	// budget with them: its list element, map slot, digest and the
	// store's last answer, about 300 bytes on amd64. Without it, copies
	// of tiny manifests would hold about twice the budget.
	memEntryCost = 320
)

// WithManifestMemory sets the byte budget of the manifests kept in
// memory (each at most maxMemManifestSize). Zero means
// DefaultManifestMemory; a negative value keeps none.
func WithManifestMemory(bytes int64) Option {
	return func(s *Server) {
		switch {
		case bytes == 0:
			s.memBudget = DefaultManifestMemory
		case bytes < 0:
			s.memBudget = 0
		default:
			s.memBudget = bytes
		}
	}
}

// memCache keeps the bytes of small committed manifests, so that a
// manifest asked for again is served without opening its file. It is a
// copy: the store stays the truth of what is cached (fromMemory asks its
// index once a second, and after any entry left it), and the least
// recently used copies go first when the budget is full. Safe for concurrent use; a nil *memCache keeps
// nothing.
type memCache struct {
	mu     sync.Mutex
	budget int64
	used   int64
	order  list.List // of *memEntry, most recently used first
	byKey  map[digest.Digest]*list.Element
}

// memEntry is one manifest in memory. body is never modified.
type memEntry struct {
	digest  digest.Digest
	body    []byte
	checked atomic.Pointer[memCheck] // the store's last answer; nil: not asked yet
}

// memCheck is what the store said of a memEntry, and when.
type memCheck struct {
	removals uint64      // the store's Removals then
	at       time.Time   // by the server's clock
	content  *memContent // what the store said, with the answer's headers; shared by the hits
}

// newMemCache returns a cache of budget bytes, or nil if budget is 0.
func newMemCache(budget int64) *memCache {
	if budget <= 0 {
		return nil
	}
	return &memCache{budget: budget, byKey: make(map[digest.Digest]*list.Element)}
}

func (m *memCache) get(d digest.Digest) (*memEntry, bool) {
	if m == nil {
		return nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.byKey[d]
	if !ok {
		return nil, false
	}
	m.order.MoveToFront(el)
	return el.Value.(*memEntry), true
}

// put keeps body as d's bytes, evicting the least recently used copies
// until the budget holds it. A body larger than maxMemManifestSize, or
// than the budget with its memEntryCost, is not kept.
func (m *memCache) put(d digest.Digest, body []byte) {
	size := memCost(body)
	if m == nil || len(body) > maxMemManifestSize || size > m.budget {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.byKey[d]; ok {
		return
	}
	for m.used+size > m.budget {
		m.removeLocked(m.order.Back())
	}
	m.byKey[d] = m.order.PushFront(&memEntry{digest: d, body: body})
	m.used += size
}

// remove forgets d's copy, if any.
func (m *memCache) remove(d digest.Digest) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.byKey[d]; ok {
		m.removeLocked(el)
	}
}

func (m *memCache) removeLocked(el *list.Element) {
	e := m.order.Remove(el).(*memEntry)
	delete(m.byKey, e.digest)
	m.used -= memCost(e.body)
}

// memCost is what a copy of body is charged against the budget.
func memCost(body []byte) int64 { return int64(len(body)) + memEntryCost }

// usage returns the entries kept and the bytes charged for them.
func (m *memCache) usage() (entries int, bytes int64) {
	if m == nil {
		return 0, 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byKey), m.used
}

// fromMemory returns d from memory if a copy is kept and the store still
// holds d committed. The store's answer (Touch) also gives what may have
// changed since the copy was made (public, once upstream serves d
// anonymously), and records the use; it is relied on for memRecheck
// while no entry has left the store. A copy of an entry the store no
// longer holds (evicted, expired, deleted) is dropped: it is never served.
func (s *Server) fromMemory(q *request, d digest.Digest) (content, bool) {
	e, ok := s.mem.get(d)
	if !ok {
		return nil, false
	}
	removals, now := s.store.Removals(), s.clock(q)
	chk := e.checked.Load()
	if chk != nil && now.Before(chk.at) {
		now = s.now() // q began before the last check: only a new reading tells a clock set back
	}
	if chk == nil || chk.removals != removals || now.Sub(chk.at) >= memRecheck || now.Before(chk.at) {
		info, err := s.store.Touch(d)
		if err != nil || info.Size != int64(len(e.body)) {
			s.mem.remove(d)
			return nil, false
		}
		ci := contentInfo{digest: d, size: info.Size, mediaType: info.MediaType, public: info.Public}
		ci.headers = newAnswerHeaders(ci)
		chk = &memCheck{removals: removals, at: now, content: &memContent{contentInfo: ci, body: e.body}}
		e.checked.Store(chk)
	}
	return chk.content, true
}

// lookupManifest is lookup for a manifest's GET: from memory if kept,
// else from the store, keeping a small committed manifest in memory for
// the next request.
func (s *Server) lookupManifest(q *request, d digest.Digest) (content, bool, error) {
	if c, ok := s.fromMemory(q, d); ok {
		return c, true, nil
	}
	c, ok, err := s.lookup(d)
	if !ok || err != nil {
		return c, ok, err
	}
	c, ok = s.keepInMemory(c)
	return c, ok, nil
}

// keepInMemory reads a small committed manifest into memory and returns
// it served from there; any other content is returned as it is. The
// bytes are checked against the digest once more, so that a file changed
// on disk since its commit is not copied. One that no longer matches is
// not served either: the store removes it, as its scrub would, and the
// answer is a miss, filled again.
func (s *Server) keepInMemory(c content) (content, bool) {
	f, ok := c.(*storedFile)
	if !ok || s.mem == nil || f.mediaType == "" || f.size < 0 || f.size > maxMemManifestSize {
		return c, true
	}
	body := make([]byte, f.size)
	if _, err := io.ReadFull(f.file, body); err != nil {
		return c, true // storedFile.open seeks back to where it is asked to start
	}
	if digest.FromBytes(body) != f.digest {
		s.store.RemoveCorrupt(f.digest, f.file)
		f.close()
		return nil, false
	}
	s.mem.put(f.digest, body)
	f.close()
	return &memContent{contentInfo: f.contentInfo, body: body}, true
}

// memContent is a committed manifest served from memory. It is never
// modified, so the hits of one store answer share it (memCheck).
type memContent struct {
	contentInfo
	body []byte
}

func (c *memContent) info() contentInfo { return c.contentInfo }

// open returns q's own reader (request.mem): a request opens its content
// once.
func (c *memContent) open(q *request, start, _ int64) (io.Reader, error) {
	q.mem = memBody{b: c.body[start:]}
	return &q.mem, nil
}

// memBody is a body in memory. copyBody writes it in one Write, which
// net/http buffers with the headers and sends in one write(2): copied as
// a reader, it would go out in two, through a 32 KiB buffer allocated
// for each request.
type memBody struct {
	b   []byte
	off int // what Read has returned
}

func (m *memBody) Read(p []byte) (int, error) {
	if m.off >= len(m.b) {
		return 0, io.EOF
	}
	n := copy(p, m.b[m.off:])
	m.off += n
	return n, nil
}

// writeTo writes length bytes of the body to w (all of it if -1).
func (m *memBody) writeTo(w io.Writer, length int64) error {
	if length < 0 {
		length = int64(len(m.b))
	}
	if length > int64(len(m.b)) {
		return io.ErrUnexpectedEOF
	}
	_, err := w.Write(m.b[:length])
	return err
}

func (c *memContent) markSource(rec *recorder) { rec.source, rec.result = "cache", resultHit }

func (c *memContent) close() {}
