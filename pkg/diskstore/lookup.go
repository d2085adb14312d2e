package diskstore

import (
	"errors"
	"os"

	"github.com/opencontainers/go-digest"
)

// Presence says where a digest stands in the store.
type Presence uint8

const (
	// Absent: neither committed nor being filled.
	Absent Presence = iota
	// Committed: stored and verified; Found.File and Found.Info are set.
	Committed
	// BeingFilled: a fill is in progress; Found.Fill is set.
	BeingFilled
)

// Found is the answer to Lookup.
type Found struct {
	Presence Presence
	File     *os.File // Committed: open for reading; the caller closes it
	Info     Info     // Committed
	Fill     *Fill    // BeingFilled: read it with NewReader
}

// Lookup answers in one call whether d is committed, being filled, or
// absent. A committed entry is opened and its use recorded, as by Open.
//
// The fill is looked for first: a commit moves d from the fills to the
// index, so in this order a commit between the two checks is seen by the
// second, and a digest whose fill has begun is never reported absent.
// Absent holds only at the moment of the answer: a fill may begin right
// after, and Begin reports it (ErrFilling).
func (s *Store) Lookup(d digest.Digest) (Found, error) {
	if fill := s.Filling(d); fill != nil {
		return Found{Presence: BeingFilled, Fill: fill}, nil
	}
	f, info, err := s.Open(d)
	switch {
	case err == nil:
		return Found{Presence: Committed, File: f, Info: info}, nil
	case errors.Is(err, ErrNotFound):
		return Found{Presence: Absent}, nil
	default:
		return Found{}, err
	}
}
