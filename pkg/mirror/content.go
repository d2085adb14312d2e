package mirror

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/opencontainers/go-digest"

	"nodecache/pkg/diskstore"
)

// content is what a GET or HEAD of a blob or manifest is answered with:
// either a committed file or a fill in progress.
type content struct {
	digest    digest.Digest
	size      int64 // -1 if not known yet
	mediaType string
	public    bool            // served anonymously upstream: any client may have it
	peer      string          // the peer a fill's bytes come from, or ""
	file      *os.File        // committed content, or nil
	fill      *diskstore.Fill // content still arriving, or nil
	body      io.Reader       // content streamed uncached (no Range), or nil
	release   func()          // frees body's resources
}

// close releases the file or the uncached body, if any.
func (c content) close() {
	if c.file != nil {
		c.file.Close()
	}
	if c.release != nil {
		c.release()
	}
}

// serveContent writes headers and, for GET, the body of c, honouring a
// single Range. Once headers are out, a failure aborts the connection: a
// client never receives a short 200 or 206.
func serveContent(q *request, c content) error {
	h := q.rec.Header()
	mediaType := c.mediaType
	if mediaType == "" {
		mediaType = "application/octet-stream"
	}
	h.Set("Content-Type", mediaType)
	h.Set("Docker-Content-Digest", c.digest.String())
	h.Set("Etag", `"`+c.digest.String()+`"`)

	status, start, length := http.StatusOK, int64(0), c.size
	if c.body != nil {
		// Uncached content streams from upstream once, start to end: a
		// Range is ignored (RFC 9110 allows it; containerd then skips
		// the bytes it already has).
		if c.size >= 0 {
			h.Set("Content-Length", strconv.FormatInt(c.size, 10))
		}
	} else if c.size >= 0 {
		h.Set("Accept-Ranges", "bytes")
		rng, partial, err := parseRange(q.r.Header.Get("Range"), c.size)
		if err != nil {
			e := errorf(http.StatusRequestedRangeNotSatisfiable, codeRangeInvalid, "%v for %d bytes", err, c.size)
			e.Header = http.Header{"Content-Range": {"bytes */" + strconv.FormatInt(c.size, 10)}}
			return e
		}
		if partial {
			status, start, length = http.StatusPartialContent, rng.start, rng.length
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, c.size))
		}
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	if q.r.Method == http.MethodHead {
		q.rec.WriteHeader(status)
		return nil
	}
	body, err := openBody(q, c, start)
	if err != nil {
		return err // nothing sent yet: the client gets an error answer
	}
	if c.file == nil {
		defer body.Close() // a committed file is closed by the caller
	}
	q.rec.WriteHeader(status)
	if c.file == nil {
		// Send headers now: the client must not wait for the first byte of
		// a slow upstream (containerd gives up after 30 s without headers).
		http.NewResponseController(q.rec).Flush()
	}
	var n int64
	if length >= 0 {
		n, err = io.Copy(q.rec, io.LimitReader(body, length))
		if err == nil && n < length {
			err = io.ErrUnexpectedEOF
		}
	} else {
		_, err = io.Copy(q.rec, body)
	}
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

// openBody returns the bytes of c from start on: the committed file or a
// reader of the fill in progress.
func openBody(q *request, c content, start int64) (io.ReadCloser, error) {
	if c.body != nil {
		return io.NopCloser(c.body), nil
	}
	if c.file != nil {
		if _, err := c.file.Seek(start, io.SeekStart); err != nil {
			return nil, err
		}
		// The *os.File itself, so that io.Copy through a LimitReader
		// reaches the connection's ReadFrom and goes out by sendfile.
		return c.file, nil
	}
	r, err := c.fill.NewReader(q.r.Context(), start)
	if errors.Is(err, diskstore.ErrSpilled) {
		return nil, err // the caller fetches its own copy
	}
	if errors.Is(err, diskstore.ErrAborted) {
		return nil, errorf(http.StatusBadGateway, codeUnavailable, "fetch of %s from %s failed", c.digest, q.registry)
	}
	return r, err
}
