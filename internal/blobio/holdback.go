package blobio

import "io"

// HoldBack passes the first n bytes of r, holding back the last of them
// until verified returns nil: the hold-back rule (Releasable) for a part
// of a stream that ends before the stream does. A reader of bytes 0-99 of
// a blob still being verified would otherwise receive its whole answer
// before the blob's digest is checked, and keep it if the check then
// fails. verified is called once, when only the last byte is left; an
// error it returns is the reader's error. It is not safe for concurrent
// use.
func HoldBack(r io.Reader, n int64, verified func() error) io.Reader {
	return &holdBack{r: r, left: n, verified: verified}
}

type holdBack struct {
	r        io.Reader
	left     int64 // bytes of the part still to pass
	verified func() error
	ok       bool // verified returned nil
}

func (h *holdBack) Read(p []byte) (int, error) {
	if h.left <= 0 {
		return 0, io.EOF
	}
	if h.left == 1 && !h.ok {
		if err := h.verified(); err != nil {
			return 0, err
		}
		h.ok = true
	}
	limit := h.left
	if !h.ok {
		limit = Releasable(h.left, false)
	}
	n, err := h.r.Read(p[:min(int64(len(p)), limit)])
	h.left -= int64(n)
	if err == io.EOF && h.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}
