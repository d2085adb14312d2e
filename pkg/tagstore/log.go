package tagstore

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/atomicfile"
	"nodecache/internal/ociref"
)

// line is one record in the log, one JSON object per line. A later line
// for a key replaces an earlier one.
type line struct {
	Key       string        `json:"k"`
	Digest    digest.Digest `json:"d,omitempty"`
	MediaType string        `json:"m,omitempty"`
	Size      int64         `json:"s"`
	Missing   bool          `json:"x,omitempty"`
	At        int64         `json:"t"` // Unix milliseconds
}

// maxLineLength bounds a line read back: the key, the digest and the
// media type at their bounds, JSON-escaped, fit in it.
const maxLineLength = 16 << 10

func encode(key string, rec Record) []byte {
	b, err := json.Marshal(line{Key: key, Digest: rec.Digest, MediaType: rec.MediaType, Size: rec.Size,
		Missing: rec.Missing, At: rec.At.UnixMilli()})
	if err != nil {
		panic(err) // unreachable: strings and numbers always encode
	}
	return append(b, '\n')
}

// valid reports whether a record can be kept and read back: a bounded
// key, and a digest of an accepted algorithm unless the tag was missing.
func valid(key string, rec Record) bool {
	if key == "" || len(key) > maxKeyLength || len(rec.MediaType) > maxMediaTypeLength {
		return false
	}
	if rec.Missing {
		return rec.Digest == ""
	}
	return ociref.Check(rec.Digest) == nil
}

// decode reads one line; ok is false for a line that is torn or invalid.
func decode(b []byte) (key string, rec Record, ok bool) {
	var l line
	if err := json.Unmarshal(b, &l); err != nil {
		return "", Record{}, false
	}
	rec = Record{Digest: l.Digest, MediaType: l.MediaType, Size: l.Size, Missing: l.Missing, At: time.UnixMilli(l.At)}
	return l.Key, rec, valid(l.Key, rec)
}

// load reads the log into memory, oldest line first, and returns how many
// lines it skipped. A missing log is an empty store.
func (s *Store) load() (skipped int, err error) {
	f, err := os.Open(s.path())
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("tagstore: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	now := s.now()
	for {
		b, err := readLine(r)
		if len(b) > 0 {
			key, rec, ok := decode(b)
			switch {
			case !ok:
				skipped++
			case s.maxAge > 0 && now.Sub(rec.At) > s.maxAge:
				s.records.Remove(key) // an older line may have put it there
			default:
				s.records.Add(key, rec)
			}
		}
		if errors.Is(err, io.EOF) {
			return skipped, nil
		}
		if err != nil {
			return skipped, fmt.Errorf("tagstore: read %s: %w", s.path(), err)
		}
	}
}

// readLine returns the next line without its newline; a line longer than
// maxLineLength is returned as one byte that does not decode, so it is
// skipped.
func readLine(r *bufio.Reader) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		if len(buf)+len(chunk) <= maxLineLength {
			buf = append(buf, chunk...)
		} else {
			buf = []byte{0}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSuffix(buf, []byte{'\n'}), err
	}
}

// compact rewrites the log from memory and opens it for appending.
func (s *Store) compact() error {
	s.ioMu.Lock()
	defer s.ioMu.Unlock()
	return s.compactLocked()
}

// compactLocked is compact with ioMu held. Records set while it runs are
// pending, and go to the new log at the next flush.
func (s *Store) compactLocked() error {
	now := s.now()
	var buf []byte
	n := 0
	s.mu.Lock()
	for _, key := range s.records.Keys() { // oldest first: reading back keeps the order
		rec, _ := s.records.Peek(key)
		if s.maxAge > 0 && now.Sub(rec.At) > s.maxAge {
			continue
		}
		buf = append(buf, encode(key, rec)...)
		n++
	}
	s.mu.Unlock()
	s.broken = true // until the new log is in place
	if err := atomicfile.Write(s.dir, s.path(), buf, 0o600); err != nil {
		return fmt.Errorf("tagstore: rewrite %s: %w", s.path(), err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("tagstore: %w", err)
	}
	f, err := os.OpenFile(s.path(), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("tagstore: %w", err)
	}
	if s.file != nil {
		s.file.Close()
	}
	s.file, s.lines, s.broken = f, n, false
	return nil
}
