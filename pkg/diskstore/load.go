package diskstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"nodecache/internal/ociref"
)

// loadWorkers is how many shard directories Open reads at once. The load
// is system calls (getdents, fstatat) more than computation: a few more
// than the cores of a small node keep the disk's queue busy when the
// inodes are not cached yet, and cost nothing when they are.
const loadWorkers = 8

// direntBufferSize is the getdents buffer of one load worker: a shard of
// a million-entry store (about 4,000 entries of 88 bytes) in a few calls.
const direntBufferSize = 64 << 10

// load builds the index from blobs/ before the store serves (scan, merge).
func (s *Store) load() error {
	acc, err := s.scan(nil, false)
	if err != nil {
		return err
	}
	s.merge(acc)
	return nil
}

// scan reads the entries of blobs/: the shard directories are read in
// parallel, each with getdents and one fstatat per entry, until stop is
// closed. Only names that are valid digests of a supported algorithm
// count; a media type sidecar whose content file is missing (a crash
// between the two renames) is removed. live is a scan while the store
// serves (loading.go).
func (s *Store) scan(stop <-chan struct{}, live bool) (*loadAcc, error) {
	var dirs []shardDir
	for _, alg := range ociref.Algorithms() {
		algDir := filepath.Join(s.root, "blobs", alg.String())
		shards, err := os.ReadDir(algDir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("diskstore: read %s: %w", algDir, err)
		}
		for _, shard := range shards {
			if shard.IsDir() && len(shard.Name()) == 2 {
				dirs = append(dirs, shardDir{alg: alg, name: shard.Name(), path: filepath.Join(algDir, shard.Name())})
			}
		}
	}
	acc := &loadAcc{store: s, live: live, tails: make(map[key]*[32]byte)}
	var next atomic.Int64
	errs := make([]error, loadWorkers)
	var wg sync.WaitGroup
	for w := range min(loadWorkers, len(dirs)) {
		wg.Go(func() {
			sc := shardScanner{acc: acc, buf: make([]byte, direntBufferSize)}
			for i := next.Add(1) - 1; i < int64(len(dirs)) && errs[w] == nil && !closed(stop); i = next.Add(1) - 1 {
				errs[w] = sc.scan(dirs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return acc, nil
}

// closed reports whether ch is closed; a nil ch never is.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// shardDir is one blobs/<algorithm>/<xx> directory.
type shardDir struct {
	alg  ociref.Algorithm
	name string // the two hex digits
	path string
}

// loadAcc gathers what the load workers found.
type loadAcc struct {
	store *Store
	live  bool // the store serves while it loads
	// mu guards the fields below.
	mu    sync.Mutex
	slots []slot
	tails map[key]*[32]byte
}

// add appends one shard's entries.
func (a *loadAcc) add(slots []slot, tails map[key]*[32]byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.slots = append(a.slots, slots...)
	for k, t := range tails {
		a.tails[k] = t
	}
}

// removeSidecar removes the media type file of base in shard d, whose
// content file the scan did not find. While the store serves, the file
// may be a fill's, written before its content is renamed into place (or
// the content was renamed after the shard was read): it is removed only
// if no fill of the digest is in progress and the index does not hold
// it, checked and removed under the lock, which a new fill takes before
// it can write the file.
func (a *loadAcc) removeSidecar(d shardDir, base string) {
	path := filepath.Join(d.path, base+typeSuffix)
	if k, tail, ok := parseName(d.alg, d.name, []byte(base)); ok && a.live {
		s := a.store
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, indexed := s.index.Peek(k); indexed || s.fills[digestOf(k, record{tail: tail})] != nil {
			return
		}
	}
	_ = os.Remove(path)
}

// shardScanner reads shard directories for one load worker, reusing its
// buffers from shard to shard: an entry costs no allocation of its own
// unless it has a media type or a sha512 digest.
type shardScanner struct {
	acc      *loadAcc
	buf      []byte // getdents
	dirents  []byte // the current shard's entries, as getdents wrote them
	slots    []slot
	tails    map[key]*[32]byte
	sidecars map[string]bool // base names with a media type file; true once matched
}

// scan adds the entries of one shard directory. A file's mtime is its
// last use: commits and serves set it (see touchInterval).
func (sc *shardScanner) scan(d shardDir) error {
	fd, err := unix.Open(d.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("diskstore: read %s: %w", d.path, err)
	}
	defer unix.Close(fd)
	if err := sc.readAll(fd, d.path); err != nil {
		return err
	}
	sc.slots, sc.tails = sc.slots[:0], nil
	clear(sc.sidecars)
	for name := range sc.names() {
		if base, ok := strings.CutSuffix(string(name), typeSuffix); ok {
			if sc.sidecars == nil {
				sc.sidecars = make(map[string]bool)
			}
			sc.sidecars[base] = false
		}
	}
	for name := range sc.names() {
		sc.entry(fd, d, name)
	}
	for base, matched := range sc.sidecars {
		if !matched {
			sc.acc.removeSidecar(d, base)
		}
	}
	sc.acc.add(sc.slots, sc.tails)
	return nil
}

// entry adds the content file name of shard d, if it is one.
func (sc *shardScanner) entry(fd int, d shardDir, name []byte) {
	k, tail, ok := parseName(d.alg, d.name, name)
	if !ok {
		return
	}
	var st unix.Stat_t
	if err := lstatAt(fd, name, &st); err != nil ||
		st.Mode&unix.S_IFMT != unix.S_IFREG {
		return // removed while we were reading, or not a file: not ours to index
	}
	sl := slot{key: k, size: st.Size, used: st.Mtim.Sec, public: st.Mode&0o004 != 0, prev: none, next: none}
	if _, ok := sc.sidecars[string(name)]; ok {
		sc.sidecars[string(name)] = true
		if mt, ok := sc.mediaType(fd, d, name); ok {
			s := sc.acc.store
			s.mu.Lock()
			sl.mediaType = s.mediaTypeIndexLocked(mt)
			s.mu.Unlock()
		}
	}
	if tail != nil {
		if sc.tails == nil {
			sc.tails = make(map[key]*[32]byte)
		}
		sc.tails[k] = tail
	}
	sc.slots = append(sc.slots, sl)
}

// maxTypeBytes bounds the media type file the loader reads with one
// read; a longer one (none of the OCI or Docker types comes close) is
// read whole the slow way.
const maxTypeBytes = 512

// mediaType reads the media type file of the entry name of shard d, open
// as fd: three system calls, relative to the directory.
func (sc *shardScanner) mediaType(fd int, d shardDir, name []byte) (string, bool) {
	path := string(name) + typeSuffix
	tf, err := unix.Openat(fd, path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", false
	}
	defer unix.Close(tf)
	var buf [maxTypeBytes]byte
	n, err := unix.Read(tf, buf[:])
	if err != nil || n < 0 {
		return "", false
	}
	if n == len(buf) {
		mt, err := os.ReadFile(filepath.Join(d.path, path))
		return string(mt), err == nil
	}
	return string(buf[:n]), true
}

// readAll reads every entry of the directory fd into sc.dirents.
func (sc *shardScanner) readAll(fd int, path string) error {
	sc.dirents = sc.dirents[:0]
	for {
		n, err := unix.Getdents(fd, sc.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("diskstore: read %s: %w", path, err)
		}
		if n <= 0 {
			return nil
		}
		sc.dirents = append(sc.dirents, sc.buf[:n]...)
	}
}

// names yields the names in sc.dirents (linux_dirent64 records: inode,
// offset, record length, type, then the name ending in a NUL byte). A
// name is valid only until the next shard is read.
func (sc *shardScanner) names() func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		b := sc.dirents
		for len(b) >= 19 {
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 19 || reclen > len(b) {
				return
			}
			rec := b[19:reclen]
			if i := indexNUL(rec); i >= 0 {
				rec = rec[:i]
			}
			if binary.NativeEndian.Uint64(b[0:8]) != 0 && !yield(rec) {
				return
			}
			b = b[reclen:]
		}
	}
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// parseName parses the file name of an entry of algorithm alg in shard
// directory shard (its first two hex digits) into its key and, for
// sha512, its tail, with no allocation for sha256. Only lowercase hex of
// the algorithm's length is a name: the same grammar as ociref's.
func parseName(alg ociref.Algorithm, shard string, name []byte) (key, *[32]byte, bool) {
	size := alg.Size()
	if len(name) != 2*size || string(name[:2]) != shard {
		return key{}, nil, false
	}
	var sum [64]byte
	for i := range size {
		hi, lo := hexValue[name[2*i]], hexValue[name[2*i+1]]
		if hi|lo == notHex {
			return key{}, nil, false
		}
		sum[i] = hi<<4 | lo
	}
	k := key{alg: alg}
	copy(k.sum[:], sum[:32])
	if size == 32 {
		return k, nil, true
	}
	tail := new([32]byte)
	copy(tail[:], sum[32:size])
	return k, tail, true
}

// notHex marks a byte that is not a lowercase hex digit in hexValue; it
// survives an OR with any digit's value.
const notHex = 0xff

// hexValue is the value of each lowercase hex digit, and notHex for every
// other byte: a constant, as encoding/hex's own table is.
const hexValue = "" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\x0a\x0b\x0c\x0d\x0e\x0f\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff" +
	"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
