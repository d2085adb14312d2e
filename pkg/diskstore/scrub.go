package diskstore

import (
	"context"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ociref"
)

// DefaultScrubInterval is how often a scrub pass starts. Entries are
// verified as they are written, so what the scrub finds went bad on the
// disk afterwards (a bit flip, a lost write, an edit): a day bounds how
// long such an entry is served, for one read of the store a day.
const DefaultScrubInterval = 24 * time.Hour

// NoScrub, passed to WithScrubInterval, switches the scrub off.
const NoScrub time.Duration = -1

// DefaultScrubRate is the scrub's read rate in bytes per second: 4 MiB/s
// reads the daemon's default 20 GiB bound in under an hour and a half,
// a small share of any disk's throughput and of one core's hashing, so
// pulls never wait on it.
const DefaultScrubRate = 4 << 20

// scrubFileCost bounds the files a scrub tick opens: its budget in bytes
// over this, at least one. An entry costs an open, a stat and a close,
// and a block read even when it is smaller. Without the bound a tick of
// tiny entries had none but the pass: at 36 bytes an entry, a tick of 4
// MiB opened 116,000 files, for a minute with the inodes out of the
// cache, and held a shutdown that long. By default a tick opens 1,024.
const scrubFileCost = 4 << 10

// scrubTick is how often the scrub reads its share: rate times a tick's
// seconds, in bytes. A second keeps each share small (4 MiB by default).
const scrubTick = time.Second

// WithScrubInterval sets how often a scrub pass, which re-hashes every
// committed entry and removes those that no longer match their digest,
// starts. Zero means DefaultScrubInterval; a negative value (NoScrub)
// switches the scrub off. A pass that takes longer than d is followed
// by the next at once.
func WithScrubInterval(d time.Duration) Option {
	return func(s *Store) {
		if d == 0 {
			d = DefaultScrubInterval
		}
		s.scrubInterval = d
	}
}

// WithScrubRate bounds the scrub's reads to bytesPerSecond. Zero or a
// negative value means DefaultScrubRate.
func WithScrubRate(bytesPerSecond int64) Option {
	return func(s *Store) {
		if bytesPerSecond <= 0 {
			bytesPerSecond = DefaultScrubRate
		}
		s.scrubRate = bytesPerSecond
	}
}

// withScrubTicks drives the scrub from ticks instead of a ticker of
// scrubTick, and calls ticked, if not nil, with each tick's bytes hashed.
// For tests.
func withScrubTicks(ticks <-chan time.Time, ticked func(int64)) Option {
	return func(s *Store) { s.scrubTicks, s.scrubTicked = ticks, ticked }
}

// scrub is the state of the scrub between ticks. Run's goroutine alone
// uses it.
type scrub struct {
	next    time.Time // when the next pass starts; zero: at the first tick
	running bool
	shards  []string // shard directories left in this pass
	dir     string   // the current shard
	names   []string // files left in the current shard
	cur     *scrubFile
}

// scrubFile is the entry being hashed, across ticks.
type scrubFile struct {
	d  digest.Digest
	f  *os.File
	fi os.FileInfo
	h  hash.Hash
}

// tickScrub hashes up to budget bytes of the pass in progress, opening
// budget/scrubFileCost files at most (at least one), starting a pass if
// it is time, and returns the bytes hashed. It stops early once ctx
// ends: a tick of files whose inodes are not cached can take seconds,
// and a shutdown should not wait for it.
func (s *Store) tickScrub(ctx context.Context, sc *scrub, budget int64) int64 {
	if !sc.running {
		now := s.now()
		if now.Before(sc.next) {
			return 0
		}
		sc.next, sc.running, sc.shards = now.Add(s.scrubInterval), true, s.shardDirs()
	}
	var hashed int64
	for files := max(budget/scrubFileCost, 1); hashed < budget; {
		if sc.cur == nil {
			if files == 0 || ctx.Err() != nil {
				break
			}
			if !s.nextScrubFile(sc) {
				sc.running = false // pass done
				break
			}
			files--
		}
		n, err := io.CopyN(sc.cur.h, sc.cur.f, budget-hashed)
		hashed += n
		if err != nil {
			s.endScrubFile(sc.cur, err)
			sc.cur = nil
		}
	}
	s.mu.Lock()
	s.counts.ScrubBytes += uint64(hashed)
	s.mu.Unlock()
	return hashed
}

// endScrubFile judges a file the scrub has read to its end (err is
// io.EOF) or could not read, and closes it.
func (s *Store) endScrubFile(c *scrubFile, err error) {
	c.f.Close()
	if err == io.EOF {
		if got := digest.NewDigest(c.d.Algorithm(), c.h); got == c.d {
			return
		}
		err = ErrDigestMismatch
	}
	s.removeCorrupt(c.d, c.fi, err)
}

// nextScrubFile opens the next entry of the pass into sc.cur, and
// reports whether there was one.
func (s *Store) nextScrubFile(sc *scrub) bool {
	for {
		for len(sc.names) > 0 {
			name := sc.names[0]
			sc.names = sc.names[1:]
			if c := s.openScrubFile(sc.dir, name); c != nil {
				sc.cur = c
				return true
			}
		}
		if len(sc.shards) == 0 {
			return false
		}
		sc.dir, sc.shards = sc.shards[0], sc.shards[1:]
		entries, _ := os.ReadDir(sc.dir) // a shard gone meanwhile has nothing to check
		sc.names = sc.names[:0]
		for _, e := range entries {
			if e.Type().IsRegular() && !strings.HasSuffix(e.Name(), typeSuffix) {
				sc.names = append(sc.names, e.Name())
			}
		}
	}
}

// openScrubFile opens the entry file name of shard directory dir, or
// returns nil if it is not one (or is gone).
func (s *Store) openScrubFile(dir, name string) *scrubFile {
	alg, ok := ociref.AlgorithmOf(digest.Algorithm(filepath.Base(filepath.Dir(dir))))
	if !ok {
		return nil
	}
	k, tail, err := parseStoreName(alg, filepath.Base(dir), name)
	if err != nil {
		return nil
	}
	d := digestOf(k, record{tail: tail})
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil
	}
	return &scrubFile{d: d, f: f, fi: fi, h: d.Algorithm().Hash()}
}

// shardDirs lists the shard directories of every algorithm.
func (s *Store) shardDirs() []string {
	var dirs []string
	for _, alg := range ociref.Algorithms() {
		algDir := filepath.Join(s.root, "blobs", alg.String())
		shards, _ := os.ReadDir(algDir)
		for _, sh := range shards {
			if sh.IsDir() && len(sh.Name()) == 2 {
				dirs = append(dirs, filepath.Join(algDir, sh.Name()))
			}
		}
	}
	return slices.Clip(dirs)
}

// removeCorrupt removes d, found not to match its digest, and counts it.
// fi is the file that was hashed (nil: the file now at d's path): if d's
// file is another one by now (d was evicted and filled again meanwhile),
// it is left alone.
//
// Only an entry in the index (or, while it loads, found on disk by
// lockIndexed) is removed, and it is checked and taken out of the index
// under the lock: while d is indexed no new fill of d can put its file
// in place, so the file checked is the file removed. An entry not in the
// index is left alone: it is being evicted (the eviction unlinks it) or
// a new fill of d is committing it, and removing its path here could
// remove that new, good file once it is indexed.
func (s *Store) removeCorrupt(d digest.Digest, fi os.FileInfo, why error) {
	k, tail, _ := keyOf(d)
	r, ok := s.lockIndexed(k, tail, d, true)
	if ok && fi != nil {
		now, err := os.Stat(s.path(d))
		ok = err == nil && os.SameFile(now, fi)
	}
	if !ok {
		s.mu.Unlock()
		return
	}
	s.counts.Corrupt++
	victims := []victim{s.takeLocked(k, r)}
	s.mu.Unlock()
	s.log.Warn("cache entry does not match its digest; removed", "digest", d, "error", why)
	s.removeVictims(victims, "corrupt")
}

// closeScrub lets go of the file a pass was reading.
func (sc *scrub) close() {
	if sc.cur != nil {
		sc.cur.f.Close()
	}
}
