package diskstore

import (
	"fmt"
	"os"

	"github.com/opencontainers/go-digest"
)

// Manifests returns every committed entry that has a media type (the
// manifests and indexes), for an operations view. It reads the index
// only, and records no use: while the index loads (Loaded), it lists
// those read so far.
func (s *Store) Manifests() []Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Info
	for i := range s.index.slots {
		sl := &s.index.slots[i]
		if sl.mediaType == 0 {
			continue
		}
		if _, ok := s.index.pos[sl.key]; !ok {
			continue // a free slot
		}
		out = append(out, s.infoLocked(sl.key, s.index.record(int32(i))))
	}
	return out
}

// Peek opens the committed content of d for reading, as Open does, but
// records no use: looking does not keep an entry from eviction or
// expiry. The caller closes the file.
func (s *Store) Peek(d digest.Digest) (*os.File, Info, error) {
	info, err := s.Stat(d)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(s.path(info.Digest))
	if os.IsNotExist(err) {
		return nil, Info{}, ErrNotFound
	}
	if err != nil {
		return nil, Info{}, fmt.Errorf("diskstore: open %s: %w", d, err)
	}
	return f, info, nil
}
