package mirror

import (
	"time"

	"nodecache/pkg/tagstore"
)

// DefaultNotFoundTTL is how long upstream's 404 for a tag or a listing is
// answered without asking again: a tag pushed just after is seen within
// 10 s, and a client asking again and again for a tag that does not exist
// (a fallback list of tags) costs upstream one request per 10 s. While
// upstream cannot answer, the 404 is kept as stale answers are.
const DefaultNotFoundTTL = 10 * time.Second

// TagStore is where the tag records answered without a client's
// credentials are kept; *tagstore.Store, on disk or in memory. Records
// answered with a client's credentials never go there: they stay in the
// mirror's memory, keyed by the client's identity.
type TagStore interface {
	Get(key string) (tagstore.Record, bool)
	Set(key string, rec tagstore.Record)
	Len() int
	Each(fn func(key string, rec tagstore.Record))
}

// WithTagStore keeps the shared tag records in ts, such as a
// tagstore.Store on the data directory, so that they survive a restart.
// The default keeps them in memory.
func WithTagStore(ts TagStore) Option { return func(s *Server) { s.tagStore = ts } }

// WithNotFoundTTL sets how long upstream's 404 for a tag or a listing is
// answered without asking upstream again. Zero means DefaultNotFoundTTL;
// a negative value means a 404 is never answered without asking (it is
// still kept, for when upstream cannot answer).
func WithNotFoundTTL(d time.Duration) Option {
	return func(s *Server) {
		switch {
		case d == 0:
			s.notFoundTTL = DefaultNotFoundTTL
		case d < 0:
			s.notFoundTTL = 0
		default:
			s.notFoundTTL = d
		}
	}
}

// tagRecords applies the mirror's freshness rules to the records of a
// TagStore: an answer is fresh for the tag TTL (a 404 for the not-found
// TTL), and kept, stale, for stale-if-error until the maximum staleness.
type tagRecords struct {
	store    TagStore
	fresh    time.Duration // tag TTL; 0: never fresh
	notFound time.Duration // for a 404; 0: never fresh
	keep     time.Duration // 0: until evicted
	now      func() time.Time
}

// Get returns the record under k, whether it is fresh, and whether there
// is one young enough to serve when upstream cannot answer.
func (t *tagRecords) Get(k string) (rec tagRecord, fresh, ok bool) {
	return t.getAt(k, t.now())
}

// getAt is Get with the clock read by the caller.
func (t *tagRecords) getAt(k string, now time.Time) (rec tagRecord, fresh, ok bool) {
	r, ok := t.store.Get(k)
	if !ok {
		return tagRecord{}, false, false
	}
	age := now.Sub(r.At)
	if t.keep > 0 && age > t.keep {
		return tagRecord{}, false, false
	}
	fresh = age < t.fresh
	if r.Missing {
		fresh = age < t.notFound
	}
	return tagRecord{digest: r.Digest, mediaType: r.MediaType, size: r.Size, missing: r.Missing}, fresh, true
}

// Each calls fn with every record still young enough to serve, and not a
// 404.
func (t *tagRecords) Each(fn func(k string, rec tagRecord)) {
	t.store.Each(func(k string, r tagstore.Record) {
		if r.Missing || (t.keep > 0 && t.now().Sub(r.At) > t.keep) {
			return
		}
		fn(k, tagRecord{digest: r.Digest, mediaType: r.MediaType, size: r.Size})
	})
}

// Set records rec under k, answered now.
func (t *tagRecords) Set(k string, rec tagRecord) {
	t.store.Set(k, tagstore.Record{Digest: rec.digest, MediaType: rec.mediaType, Size: rec.size,
		Missing: rec.missing, At: t.now()})
}

// Len is the number of records, fresh or stale.
func (t *tagRecords) Len() int { return t.store.Len() }

// initTagRecords builds the tag records and the listings from the
// options: the shared records in the TagStore given, else in memory; the
// private ones always in memory.
func (s *Server) initTagRecords() {
	if s.tagStore == nil {
		s.tagStore = memoryTagStore(s.now)
	}
	s.tags = &tagRecords{store: s.tagStore, fresh: s.tagTTL, notFound: s.notFoundTTL, keep: s.tagMaxStale, now: s.now}
	private := *s.tags
	private.store = memoryTagStore(s.now)
	s.privateTags = &private
	s.listings = newListings(DefaultListingTTL, s.notFoundTTL, s.tagMaxStale, s.now)
}

// memoryTagStore is a tagstore.Store in memory only.
func memoryTagStore(now func() time.Time) *tagstore.Store {
	ts, err := tagstore.Open("", tagstore.WithMaxRecords(maxTagRecords), tagstore.WithClock(now))
	if err != nil {
		panic(err) // unreachable: an in-memory store opens nothing
	}
	return ts
}
