package diskstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
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

// load rebuilds the index from blobs/. Only names that are valid digests of
// a supported algorithm count; a media type sidecar whose content file is
// missing (a crash between the two renames) is removed.
func (s *Store) load() error {
	for alg := range supported {
		algDir := filepath.Join(s.root, "blobs", string(alg))
		shards, err := os.ReadDir(algDir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("diskstore: read %s: %w", algDir, err)
		}
		for _, shard := range shards {
			if !shard.IsDir() || len(shard.Name()) != 2 {
				continue
			}
			if err := s.loadShard(alg, filepath.Join(algDir, shard.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) loadShard(alg digest.Algorithm, dir string) error {
	files, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("diskstore: read %s: %w", dir, err)
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
		d, err := parseStoreName(alg, filepath.Base(dir), name)
		if err != nil || !f.Type().IsRegular() {
			continue
		}
		fi, err := f.Info()
		if err != nil {
			continue // removed while we were reading: not ours to index
		}
		info := &Info{Digest: d, Size: fi.Size(), Accessed: fi.ModTime()}
		if present[name+typeSuffix] {
			mt, err := os.ReadFile(filepath.Join(dir, name+typeSuffix))
			if err == nil {
				info.MediaType = string(mt)
			}
		}
		s.entries[d] = info
	}
	return nil
}

func parseStoreName(alg digest.Algorithm, shard, name string) (digest.Digest, error) {
	d := digest.NewDigestFromEncoded(alg, name)
	if err := d.Validate(); err != nil || !strings.HasPrefix(name, shard) {
		return "", errInvalidLeftover
	}
	return d, nil
}
