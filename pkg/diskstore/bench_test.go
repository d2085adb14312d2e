package diskstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// syntheticDigest returns the i-th of a series of distinct sha256 digests.
func syntheticDigest(i int) digest.Digest {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	sum := sha256.Sum256(b[:])
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

const million = 1_000_000

// millionIndex returns a store whose index holds one million synthetic
// entries (no files), and digests beyond them for inserts.
func millionIndex(extra int) (*Store, []digest.Digest) {
	s := &Store{index: newIndex(), mediaTypes: []string{""}, fills: map[digest.Digest]*Fill{}, deleting: map[key]chan struct{}{}}
	digests := make([]digest.Digest, million+extra)
	for i := range digests {
		digests[i] = syntheticDigest(i)
	}
	for i := range million {
		k, _, _ := keyOf(digests[i])
		s.index.Add(k, record{size: 4096, used: int64(i)})
		s.used += 4096
	}
	return s, digests
}

// BenchmarkIndexMemory reports the heap taken by an index of one million
// entries.
func BenchmarkIndexMemory(b *testing.B) {
	for range b.N {
		before := heapInUse()
		s := &Store{index: newIndex(), mediaTypes: []string{""}}
		for i := range million {
			k, _, _ := keyOf(syntheticDigest(i))
			s.index.Add(k, record{size: 4096, used: int64(i)})
		}
		after := heapInUse()
		b.ReportMetric(float64(after-before)/(1<<20), "MiB/1M-entries")
		b.ReportMetric(float64(after-before)/million, "bytes/entry")
		runtime.KeepAlive(s)
	}
}

// BenchmarkIndexMillion measures a lookup, an insert and an eviction in an
// index of one million entries: the in-memory part of a hit, of a commit
// and of making room. No files are touched.
func BenchmarkIndexMillion(b *testing.B) {
	s, digests := millionIndex(million)
	b.Run("lookup", func(b *testing.B) {
		for i := range b.N {
			if _, err := s.Stat(digests[i%million]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("insert", func(b *testing.B) {
		for i := range b.N {
			k, _, _ := keyOf(digests[million+i%million])
			s.mu.Lock()
			if _, ok := s.index.Peek(k); !ok {
				s.used += 4096
			}
			s.index.Add(k, record{size: 4096, used: int64(million + i)})
			s.mu.Unlock()
		}
	})
	b.Run("evict", func(b *testing.B) {
		for i := range b.N {
			if s.index.Len() < million/2 {
				b.StopTimer()
				for j := range million / 2 {
					k, _, _ := keyOf(digests[(i+j)%len(digests)])
					if _, ok := s.index.Peek(k); !ok {
						s.index.Add(k, record{size: 4096})
						s.used += 4096
					}
				}
				b.StartTimer()
			}
			s.mu.Lock()
			s.maxSize = s.used                       // full: making room for one more evicts one
			victims, _ := s.makeRoomLocked(4096, -1) // evicts one entry
			for _, v := range victims {
				delete(s.deleting, v.k)
			}
			s.mu.Unlock()
			if len(victims) != 1 {
				b.Fatalf("evicted %d entries, want 1", len(victims))
			}
		}
	})
}

// BenchmarkOpen100k measures the index load with 100,000 entries on
// disk: the time from Open until the index holds them all. The clean mark
// is there, so Open re-hashes nothing (the synthetic files do not match
// their digests; after a crash the newest of them would be re-hashed and
// dropped), but without the byte count Close writes, as an older
// version left it, so Open loads before it returns rather than in the
// background (see BenchmarkStartup for that path).
func BenchmarkOpen100k(b *testing.B) {
	const n = 100_000
	dir := b.TempDir()
	for i := range n {
		d := syntheticDigest(i)
		p := filepath.Join(dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, cleanName), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var took time.Duration
	for range b.N {
		start := time.Now()
		s, err := Open(dir, WithMaxSize(1<<40))
		took += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		s.Close()
		if s.Len() != n {
			b.Fatalf("loaded %d entries, want %d", s.Len(), n)
		}
	}
	b.ReportMetric(took.Seconds()/float64(b.N), "s/start")
}
