package blobio

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// RangeFrom returns the Range header value asking for everything from
// offset on: "bytes=N-".
func RangeFrom(offset int64) string { return "bytes=" + strconv.FormatInt(offset, 10) + "-" }

// ParseRangeFrom returns N of a "bytes=N-" Range header, and false for any
// other value (no header, a closed range, a suffix range, several ranges).
func ParseRangeFrom(v string) (int64, bool) {
	v, ok := strings.CutPrefix(v, "bytes=")
	if !ok {
		return 0, false
	}
	v, ok = strings.CutSuffix(v, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// Continuation checks that resp answers "Range: bytes=offset-" of a blob
// of size bytes (-1 if not known), and leaves resp.Body at offset. A 206
// must start at offset and, if both are known, agree on the total. A 200
// (a server or CDN that ignores Range) must agree on the size, and its
// first offset bytes are read and dropped. The caller closes resp.Body
// either way.
func Continuation(resp *http.Response, offset, size int64) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr, err := ParseContentRange(resp.Header.Get("Content-Range"))
		switch {
		case err != nil:
			return err
		case cr.Start != offset:
			return fmt.Errorf("Content-Range starts at %d, asked for %d", cr.Start, offset)
		case size >= 0 && cr.Total >= 0 && cr.Total != size:
			return fmt.Errorf("Content-Range total %d, blob is %d bytes", cr.Total, size)
		}
		return nil
	case http.StatusOK:
		if size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != size {
			return fmt.Errorf("200 with %d bytes, blob is %d", resp.ContentLength, size)
		}
		if n, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			return fmt.Errorf("200 instead of 206: skipping %d bytes: got %d: %w", offset, n, err)
		}
		return nil
	}
	return fmt.Errorf("status %d to a Range request", resp.StatusCode)
}
