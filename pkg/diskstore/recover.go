package diskstore

import (
	"fmt"
	"os"
	"path/filepath"
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
