package blobio

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrContentRange is wrapped by ParseContentRange errors.
var ErrContentRange = errors.New("bad Content-Range")

// ContentRange is a parsed "Content-Range: bytes START-END/TOTAL" header
// of a 206 answer.
type ContentRange struct {
	Start, End int64 // the first and last byte sent, inclusive
	Total      int64 // the whole representation's size; -1 for "*"
}

// String formats c as a Content-Range value, "bytes START-END/TOTAL",
// with "*" for an unknown total: what ParseContentRange reads back.
func (c ContentRange) String() string {
	total := "*"
	if c.Total >= 0 {
		total = strconv.FormatInt(c.Total, 10)
	}
	return "bytes " + strconv.FormatInt(c.Start, 10) + "-" + strconv.FormatInt(c.End, 10) + "/" + total
}

// ParseContentRange parses "bytes START-END/TOTAL", where TOTAL may be "*"
// (returned as -1). START <= END < TOTAL is checked; anything else is an
// error wrapping ErrContentRange.
func ParseContentRange(v string) (ContentRange, error) {
	bad := fmt.Errorf("%w %q", ErrContentRange, v)
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return ContentRange{}, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return ContentRange{}, bad
	}
	first, last, ok := strings.Cut(rng, "-")
	if !ok {
		return ContentRange{}, bad
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return ContentRange{}, bad
	}
	cr := ContentRange{Start: start, End: end, Total: -1}
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t <= end {
			return ContentRange{}, bad
		}
		cr.Total = t
	}
	return cr, nil
}
