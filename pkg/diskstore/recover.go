package diskstore

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ociref"
)

// removeLeftovers deletes the temporary files of fills that were in progress
// when the process last stopped. None of them was ever served as committed.
func (s *Store) removeLeftovers() error {
	names, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return fmt.Errorf("diskstore: read %s: %w", s.tmpDir(), err)
	}
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(s.tmpDir(), n.Name())); err != nil {
			return fmt.Errorf("diskstore: remove leftover fill: %w", err)
		}
	}
	return nil
}

// load rebuilds the index from blobs/, and returns what it found in
// recency order, oldest first. Only names that are valid digests of
// a supported algorithm count; a media type sidecar whose content file is
// missing (a crash between the two renames) is removed.
func (s *Store) load() ([]loaded, error) {
	var found []loaded
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
			if !shard.IsDir() || len(shard.Name()) != 2 {
				continue
			}
			if found, err = s.loadShard(found, alg, filepath.Join(algDir, shard.Name())); err != nil {
				return nil, err
			}
		}
	}
	// The index is in recency order: add the least recently used first.
	slices.SortFunc(found, func(a, b loaded) int { return cmp.Compare(a.r.used, b.r.used) })
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range found {
		s.index.Add(l.k, l.r)
		s.used += l.r.size
	}
	return found, nil
}

// loaded is an entry read from disk at start.
type loaded struct {
	k key
	r record
}

// loadShard appends the entries of one shard directory to found. A file's
// mtime is its last use: commits and serves set it (see touchInterval).
func (s *Store) loadShard(found []loaded, alg ociref.Algorithm, dir string) ([]loaded, error) {
	files, err := os.ReadDir(dir)
	if err != nil {
		return found, fmt.Errorf("diskstore: read %s: %w", dir, err)
	}
	present := make(map[string]bool, len(files))
	for _, f := range files {
		present[f.Name()] = true
	}
	for _, f := range files {
		name := f.Name()
		if base, ok := strings.CutSuffix(name, typeSuffix); ok {
			if !present[base] {
				_ = os.Remove(filepath.Join(dir, name))
			}
			continue
		}
		k, tail, err := parseStoreName(alg, filepath.Base(dir), name)
		if err != nil || !f.Type().IsRegular() {
			continue
		}
		fi, err := f.Info()
		if err != nil {
			continue // removed while we were reading: not ours to index
		}
		r := record{size: fi.Size(), used: fi.ModTime().Unix(), tail: tail, public: isPublicMode(fi.Mode())}
		if present[name+typeSuffix] {
			if mt, err := os.ReadFile(filepath.Join(dir, name+typeSuffix)); err == nil {
				s.mu.Lock()
				r.mediaType = s.mediaTypeIndexLocked(string(mt))
				s.mu.Unlock()
			}
		}
		found = append(found, loaded{k: k, r: r})
	}
	return found, nil
}

// parseStoreName parses the file name of an entry of algorithm alg in
// directory shard into its key and tail.
func parseStoreName(alg ociref.Algorithm, shard, name string) (key, *[32]byte, error) {
	if !strings.HasPrefix(name, shard) {
		return key{}, nil, errInvalidLeftover
	}
	k, tail, err := keyOf(digest.NewDigestFromEncoded(alg.Digest(), name))
	if err != nil {
		return key{}, nil, errInvalidLeftover
	}
	return k, tail, nil
}
