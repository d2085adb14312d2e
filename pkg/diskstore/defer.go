package diskstore

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// Deferred commits.
//
// A commit's fsync writes the whole content to the disk at once. While a
// pull is still filling other blobs, that writeback competes with the
// fills for the CPU and the disk: on a 2-core VM, a cold pull of a 10-layer
// image took 1.26× as long as through nginx (which never fsyncs) with the
// fsyncs in the middle of it, and 1.02× with them after it, in the same
// run (docs/benchmarks.md). The readers have every byte before the
// commit (Fill.release), so nothing waits for it but durability.
// CommitWhenIdle therefore puts it off until the store's fills have gone
// quiet, as the kernel puts off writeback.
//
// While a commit waits, the fill stays in progress: new readers join it
// and read its verified temporary file, Stats counts it as stored, and a
// Stat or Delete of the digest commits it at once (settle). A crash in
// the wait loses the entry, not the cache: the temporary file is removed
// at the next start, as that of any fill in progress.

const (
	// commitQuiet is how long no fill may have written to the disk before
	// a deferred commit runs: longer than the gaps between the blobs of one
	// pull (a client asks for the next layer within milliseconds), short
	// enough that a single fill is durable a moment after its last byte.
	commitQuiet = 250 * time.Millisecond
	// maxCommitDelay bounds the wait under fills that never pause: a
	// node pulling without end still makes its entries durable, well
	// within the kernel's own writeback delay (30 s).
	maxCommitDelay = 10 * time.Second
	// maxDeferredBytes bounds the content waiting for its commit: what a
	// crash can make the node fetch again, and the dirty pages held back.
	// A commit that would pass it runs at once.
	maxDeferredBytes = 1 << 30
	// maxDeferredCommits bounds the commits waiting at once, each with a
	// goroutine and an open file: a pull has tens of blobs, a busy node a
	// few pulls at a time.
	maxDeferredCommits = 256
)

// deferral is the store's record of fill activity, for deferred commits.
type deferral struct {
	base      time.Time    // the origin of lastWrite, on the monotonic clock
	lastWrite atomic.Int64 // when a fill last wrote to its file, since base
	bytes     atomic.Int64 // content of the commits waiting
	count     atomic.Int64 // commits waiting
	maxBytes  int64        // maxDeferredBytes; tests lower it
	maxCount  int64        // maxDeferredCommits; tests lower it
}

func newDeferral() *deferral {
	d := &deferral{base: time.Now(), maxBytes: maxDeferredBytes, maxCount: maxDeferredCommits}
	d.lastWrite.Store(int64(-commitQuiet)) // a commit just after Open need not wait
	return d
}

// noteWrite records that a fill wrote to its file now.
func (d *deferral) noteWrite() { d.lastWrite.Store(int64(time.Since(d.base))) }

// CommitWhenIdle is Commit, with the durable part (fsync, rename, index)
// put off until no fill of the store has written for commitQuiet, or it
// has waited maxCommitDelay, or ctx ends (a shutdown: commit what is
// verified, then stop), or a Stat or Delete of the digest asks for it.
// The content is verified and released to the readers first, as by
// Commit. It returns Commit's errors.
func (f *Fill) CommitWhenIdle(ctx context.Context) error {
	return f.commitAfter(func() { f.awaitIdle(ctx) })
}

// awaitIdle waits for the turn of f's deferred commit (CommitWhenIdle).
func (f *Fill) awaitIdle(ctx context.Context) {
	d := f.store.deferral
	f.mu.Lock()
	size := f.written
	f.mu.Unlock()
	n := d.count.Add(1)
	defer d.count.Add(-1)
	if d.bytes.Add(size) > d.maxBytes || n > d.maxCount {
		d.bytes.Add(-size)
		return
	}
	defer d.bytes.Add(-size)
	start := time.Since(d.base)
	for {
		now := time.Since(d.base)
		quiet, waited := now-time.Duration(d.lastWrite.Load()), now-start
		if quiet >= commitQuiet || waited >= maxCommitDelay {
			return
		}
		t := time.NewTimer(min(commitQuiet-quiet, maxCommitDelay-waited))
		select {
		case <-t.C:
			continue
		case <-ctx.Done():
		case <-f.hurry:
		}
		t.Stop()
		return
	}
}

// hurryCommit makes a deferred commit of f run now.
func (f *Fill) hurryCommit() { f.hurryOnce.Do(func() { close(f.hurry) }) }

// errCommitsWaiting: a fill did not fit, and verified fills wait for
// their commits (register).
var errCommitsWaiting = errors.New("diskstore: commits waiting")

// anyCommittingLocked reports whether a verified fill waits for, or runs,
// its commit, and committing it could make room: while the index loads,
// nothing is evicted.
func (s *Store) anyCommittingLocked() bool {
	if s.loading {
		return false
	}
	for _, f := range s.fills {
		if f.releasedSize >= 0 {
			return true
		}
	}
	return false
}

// settleCommits makes the deferred commits run now and waits for them,
// settleTimeout in all.
func (s *Store) settleCommits() {
	s.mu.Lock()
	var waiting []*Fill
	for _, f := range s.fills {
		if f.releasedSize >= 0 {
			waiting = append(waiting, f)
			f.hurryCommit()
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	for _, f := range waiting {
		f.settleCtx(ctx)
	}
}

// releasedBytesLocked is the content of the verified fills whose commit
// waits or runs: on the disk already, so counted by a free space figure,
// and in s.reserved too.
func (s *Store) releasedBytesLocked() int64 {
	var n int64
	for _, f := range s.fills {
		n += max(f.releasedSize, 0)
	}
	return n
}
