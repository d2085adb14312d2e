package diskstore

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ociref"
)

// The index keeps one small record per committed entry, in recency order
// (least recently used at the back; see lru.go). It is built for a million
// entries: the key is the raw digest rather than its 71-byte hex string,
// the media type is a one-byte index into a table of the few media types
// in use, and times are Unix seconds.

// key is a digest in raw form. A sha512 digest keeps its first half here
// and its second half in the record.
type key struct {
	alg ociref.Algorithm // one byte
	sum [32]byte
}

// record is what the index keeps per entry.
type record struct {
	size      int64
	used      int64     // last commit or serve, Unix seconds
	tail      *[32]byte // second half of a sha512 digest; nil for sha256
	mediaType uint8     // index into Store.mediaTypes; 0 is "" (a plain blob)
	public    bool      // see Meta.Public; fits in mediaType's padding
}

// keyOf parses d, once per store call, into its key and, for sha512, its
// tail. A digest the store does not accept (ociref's grammar) gets an
// error wrapping ErrUnsupported.
func keyOf(d digest.Digest) (key, *[32]byte, error) {
	od, err := ociref.ParseDigest(string(d))
	if err != nil {
		return key{}, nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	sum := od.Sum()
	k := key{alg: od.Algorithm()}
	copy(k.sum[:], sum)
	if len(sum) == 32 {
		return k, nil, nil
	}
	tail := new([32]byte)
	copy(tail[:], sum[32:])
	return k, tail, nil
}

// digestOf converts a key and record back to the digest.
func digestOf(k key, r record) digest.Digest {
	if k.alg == ociref.SHA512 {
		return digest.NewDigestFromEncoded(digest.SHA512, hex.EncodeToString(k.sum[:])+hex.EncodeToString(r.tail[:]))
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(k.sum[:]))
}

// newIndex returns an empty recency-ordered index. It has no bound of its
// own: the store evicts by bytes, not by count.
func newIndex() *lru { return newLRU() }

// mediaTypeIndexLocked returns the table index of mt, adding it if there
// is room. Registries use a handful of manifest media types; past 255 of
// them, the entry is kept without one and is then served only to clients
// that accept anything.
func (s *Store) mediaTypeIndexLocked(mt string) uint8 {
	if mt == "" {
		return 0
	}
	for i, t := range s.mediaTypes {
		if t == mt {
			return uint8(i)
		}
	}
	if len(s.mediaTypes) > 255 {
		return 0
	}
	s.mediaTypes = append(s.mediaTypes, mt)
	return uint8(len(s.mediaTypes) - 1)
}

// infoLocked builds the public view of a record.
func (s *Store) infoLocked(k key, r record) Info {
	return Info{
		Digest:    digestOf(k, r),
		Size:      r.size,
		MediaType: s.mediaTypes[r.mediaType],
		Public:    r.public,
		Accessed:  time.Unix(r.used, 0),
	}
}
