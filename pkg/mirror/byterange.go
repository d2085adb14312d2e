package mirror

import (
	"errors"
	"strconv"
	"strings"
)

var (
	errRangeSyntax        = errors.New("malformed Range header")
	errRangeUnsatisfiable = errors.New("range not satisfiable")
)

// byteRange is a single range of a representation of known size.
type byteRange struct {
	start, length int64
}

// parseRange parses a Range header against a representation of size bytes.
// It returns ok=false when the whole representation should be sent: no
// header, or several ranges (which RFC 9110 lets a server answer in full,
// and which no registry client sends). One range is answered as a 206.
func parseRange(header string, size int64) (r byteRange, ok bool, err error) {
	if header == "" {
		return byteRange{}, false, nil
	}
	spec, found := strings.CutPrefix(header, "bytes=")
	if !found {
		return byteRange{}, false, errRangeSyntax
	}
	if strings.Contains(spec, ",") {
		return byteRange{}, false, nil
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return byteRange{}, false, errRangeSyntax
	}
	if first == "" { // suffix range: the last N bytes
		n, err := parseOffset(last)
		if err != nil {
			return byteRange{}, false, err
		}
		if n == 0 || size == 0 {
			return byteRange{}, false, errRangeUnsatisfiable
		}
		n = min(n, size)
		return byteRange{start: size - n, length: n}, true, nil
	}
	start, err := parseOffset(first)
	if err != nil {
		return byteRange{}, false, err
	}
	if start >= size {
		return byteRange{}, false, errRangeUnsatisfiable
	}
	end := size - 1
	if last != "" {
		if end, err = parseOffset(last); err != nil {
			return byteRange{}, false, err
		}
		if end < start {
			return byteRange{}, false, errRangeSyntax
		}
		end = min(end, size-1)
	}
	return byteRange{start: start, length: end - start + 1}, true, nil
}

func parseOffset(s string) (int64, error) {
	if s == "" || len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errRangeSyntax
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errRangeSyntax
	}
	return n, nil
}
