package diskstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ociref"
)

// VerifyResult summarises a Verify run.
type VerifyResult struct {
	Checked int   // entries hashed
	Bytes   int64 // bytes hashed
	Bad     int   // entries whose content did not match their name, removed
}

// Verify re-hashes every entry of the store rooted at dir and removes the
// ones whose content does not match their digest, calling bad for each.
// It is meant for a store no daemon is using: an entry being served while
// it is removed stays readable to that reader, but would be fetched again.
func Verify(dir string, bad func(d digest.Digest, err error)) (VerifyResult, error) {
	var res VerifyResult
	blobs := filepath.Join(dir, "blobs")
	if _, err := os.Stat(blobs); err != nil {
		return res, fmt.Errorf("diskstore: %s is not a store: %w", dir, err)
	}
	err := filepath.WalkDir(blobs, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.Type().IsRegular() || strings.HasSuffix(path, typeSuffix) {
			return nil
		}
		shardDir := filepath.Dir(path)
		alg, ok := ociref.AlgorithmOf(digest.Algorithm(filepath.Base(filepath.Dir(shardDir))))
		if !ok {
			return nil // not a store entry
		}
		k, tail, perr := parseStoreName(alg, filepath.Base(shardDir), e.Name())
		if perr != nil {
			return nil // not a store entry
		}
		d := digestOf(k, record{tail: tail})
		n, verr := verifyFile(path, d)
		res.Checked++
		res.Bytes += n
		if verr != nil {
			res.Bad++
			bad(d, verr)
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("diskstore: remove bad entry %s: %w", d, err)
			}
			os.Remove(path + typeSuffix)
		}
		return nil
	})
	return res, err
}

func verifyFile(path string, d digest.Digest) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := d.Algorithm().Hash()
	n, err := io.Copy(h, f)
	if err != nil {
		return n, err
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return n, fmt.Errorf("%w: content hashes to %s", ErrDigestMismatch, got)
	}
	return n, nil
}
