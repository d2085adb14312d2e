package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/blobio"
	"nodecache/internal/ocierr"
	"nodecache/pkg/diskstore"
)

// content is what a GET or HEAD of a blob or manifest is answered with:
// a committed file (storedFile), a fill in progress (fillingContent), or a
// download streamed uncached (uncachedStream). Each owns its bytes: open
// returns them, and close frees the file, reader or download it holds,
// whether or not open was called. A content serves one request.
type content interface {
	info() contentInfo
	// open returns the bytes from start on, for this request, of which
	// the answer sends length (-1: to the end). They stay valid until
	// close.
	open(q *request, start, length int64) (io.Reader, error)
	// markSource notes where the bytes come from, for the access log and
	// the metrics.
	markSource(rec *recorder)
	close()
}

// contentInfo is what an answer says about its content, and how the
// content is served.
type contentInfo struct {
	digest    digest.Digest
	size      int64 // -1 if not known yet
	mediaType string
	public    bool // served anonymously upstream: any client may have it
	// whole: the bytes stream once, start to end, so a Range is ignored
	// (RFC 9110 allows it; containerd then skips what it already has).
	whole bool
	// arriving: the bytes are still arriving, so headers go out before
	// the first byte (containerd gives up after 30 s without headers).
	arriving bool
	// headers are the answer's header values, built once for content
	// that is served often (a manifest in memory); nil: built per answer.
	headers *answerHeaders
}

// answerHeaders are the header values of an answer with content. Built
// once and shared by the answers of a manifest in memory, they are
// assigned to each answer's header map as they are, with no formatting
// or canonicalising of keys: they must never be modified.
type answerHeaders struct {
	contentType, digest, etag []string
	length                    []string // the whole content's; nil if its size is not known
}

func newAnswerHeaders(info contentInfo) *answerHeaders {
	mediaType := info.mediaType
	if mediaType == "" {
		mediaType = "application/octet-stream"
	}
	d := info.digest.String()
	a := &answerHeaders{contentType: []string{mediaType}, digest: []string{d}, etag: []string{`"` + d + `"`}}
	if info.size >= 0 {
		a.length = []string{strconv.FormatInt(info.size, 10)}
	}
	return a
}

// acceptRanges is the Accept-Ranges value of every answer that honours
// a Range; shared, never modified.
var acceptRanges = []string{"bytes"}

// storedFile is committed content: a file of the store.
type storedFile struct {
	contentInfo
	file *os.File
}

func (c *storedFile) info() contentInfo { return c.contentInfo }

func (c *storedFile) open(_ *request, start, _ int64) (io.Reader, error) {
	if _, err := c.file.Seek(start, io.SeekStart); err != nil {
		return nil, err
	}
	// The *os.File itself, so that io.Copy through a LimitReader reaches
	// the connection's ReadFrom and goes out by sendfile.
	return c.file, nil
}

func (c *storedFile) markSource(rec *recorder) { rec.source, rec.result = "cache", resultHit }

func (c *storedFile) close() { c.file.Close() }

// fillingContent is a fill in progress, read as it is written. Its bytes
// come from peer, or from upstream if peer is "".
type fillingContent struct {
	contentInfo
	fill    *diskstore.Fill
	peer    string
	reader  *diskstore.Reader // once opened
	clients *fillClients      // counts this request in until close
	// local: the fill was verified when this request found it, and only
	// its commit was under way; the bytes come from the store's disk.
	local bool
}

func newFillingContent(run fillRun) *fillingContent {
	f := run.fill
	run.clients.join()
	return &fillingContent{
		contentInfo: contentInfo{digest: f.Digest(), size: f.Size(), mediaType: f.MediaType(), public: f.Public(), arriving: true},
		fill:        f, peer: run.peer, clients: run.clients,
	}
}

// joinFillingContent is newFillingContent for a request that found the
// fill in the store rather than in its own flight: if the fill is
// verified by then, only its commit is under way, and the request is
// served from the store's disk (a hit). A request of the flight that
// fetched the bytes is never a hit, however fast the fill was.
func joinFillingContent(run fillRun) *fillingContent {
	c := newFillingContent(run)
	c.local = run.fill.IsVerified()
	return c
}

func (c *fillingContent) info() contentInfo { return c.contentInfo }

// open returns a reader of the fill. The fill's reader holds back the
// fill's last byte until the content is verified; a part that ends before
// it holds back its own last byte the same way, so that no answer
// completes with bytes that fail verification later. A fill that lost its disk before
// this request joined it answers diskstore.ErrSpilled: the caller then
// fetches its own copy.
func (c *fillingContent) open(q *request, start, length int64) (io.Reader, error) {
	r, err := c.fill.NewReader(q.r.Context(), start)
	if errors.Is(err, diskstore.ErrAborted) {
		return nil, ocierr.Errorf(http.StatusBadGateway, ocierr.CodeUnavailable, "fetch of %s from %s failed", c.digest, q.registry)
	}
	if err != nil {
		return nil, err
	}
	c.reader = r
	if length >= 0 && start+length < c.size {
		return blobio.HoldBack(r, length, func() error { return c.fill.Verified(q.r.Context()) }), nil
	}
	return r, nil
}

// markSource: a fill is a miss, or a peer's if its bytes come from a
// peer; a fill found verified, its commit under way, is a hit.
func (c *fillingContent) markSource(rec *recorder) {
	if c.local {
		rec.source, rec.result = "cache", resultHit
		return
	}
	if c.peer != "" {
		rec.source, rec.result = "peer", resultPeer
		return
	}
	rec.source, rec.result = "upstream", resultMiss
}

func (c *fillingContent) close() {
	if c.reader != nil {
		c.reader.Close()
	}
	c.clients.leave()
	c.clients = nil
}

// uncachedStream is a download the store could not take, streamed to one
// client through a verifying reader, start to end, and not kept.
type uncachedStream struct {
	contentInfo
	body    io.Reader // verified
	release func()    // closes the download; safe to call more than once
	stop    func() bool
}

func (c *uncachedStream) info() contentInfo { return c.contentInfo }

// open returns the download. It runs on the fill's context, not the
// request's (a flight may have started it for another caller), so the
// client hanging up closes it here: a read blocked on a silent upstream
// then ends at once instead of holding the connection until the fill
// timeout.
func (c *uncachedStream) open(q *request, _, _ int64) (io.Reader, error) {
	c.stop = context.AfterFunc(q.r.Context(), c.release)
	return c.body, nil
}

func (c *uncachedStream) markSource(rec *recorder) {
	rec.source, rec.result = "upstream", resultUpstream
}

func (c *uncachedStream) close() {
	if c.stop != nil {
		c.stop()
	}
	c.release()
}

// serve serves content from obtain. A fill that lost its disk before this
// client could join it streams only to the clients it already had; this
// one then gets its own uncached copy, asked for with accept (the
// client's Accept, for a manifest; the header is built only then).
func (s *Server) serve(q *request, c content, accept []string) error {
	err := s.serveAuthorized(q, c)
	if !errors.Is(err, diskstore.ErrSpilled) {
		return err
	}
	if c, err = s.fetchUncached(q, c.info().digest, acceptHeader(accept)); err != nil {
		return err
	}
	return s.serveAuthorized(q, c)
}

// serveAuthorized serves c, and closes it, if this client may have it.
// Every answer with content passes authorize first: the content may be
// private, and this client may not be the one it was fetched for.
func (s *Server) serveAuthorized(q *request, c content) error {
	defer c.close()
	if err := s.authorize(q, c.info()); err != nil {
		return err
	}
	c.markSource(q.rec)
	return serveContent(q, c)
}

// serveContent writes headers and, for GET, the body of c, honouring a
// single Range unless c streams whole. Once headers are out, a failure
// aborts the connection: a client never receives a short 200 or 206.
func serveContent(q *request, c content) error {
	info := c.info()
	hv := info.headers
	if hv == nil {
		hv = newAnswerHeaders(info)
	}
	h := q.rec.Header()
	h["Content-Type"], h["Docker-Content-Digest"], h["Etag"] = hv.contentType, hv.digest, hv.etag

	status, start, length := http.StatusOK, int64(0), info.size
	if info.whole {
		if hv.length != nil {
			h["Content-Length"] = hv.length
		}
	} else if info.size >= 0 {
		h["Accept-Ranges"] = acceptRanges
		rng, partial, err := parseRange(firstValue(q.r.Header, "Range"), info.size)
		if err != nil {
			e := ocierr.Errorf(http.StatusRequestedRangeNotSatisfiable, ocierr.CodeRangeInvalid, "%v for %d bytes", err, info.size)
			e.Header = http.Header{"Content-Range": {"bytes */" + strconv.FormatInt(info.size, 10)}}
			return e
		}
		if partial {
			status, start, length = http.StatusPartialContent, rng.start, rng.length
			h.Set("Content-Range", blobio.ContentRange{Start: start, End: start + length - 1, Total: info.size}.String())
			h.Set("Content-Length", strconv.FormatInt(length, 10))
		} else {
			h["Content-Length"] = hv.length
		}
	}
	if q.r.Method == http.MethodHead {
		q.rec.WriteHeader(status)
		return nil
	}
	body, err := c.open(q, start, length)
	if err != nil {
		return err // nothing sent yet: the client gets an error answer
	}
	q.rec.WriteHeader(status)
	if info.arriving {
		http.NewResponseController(q.rec).Flush()
	}
	if err := copyBody(q.rec, body, length); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

// copyBody copies length bytes of body to w, or all of it if length is -1.
func copyBody(w io.Writer, body io.Reader, length int64) error {
	if m, ok := body.(*memBody); ok {
		return m.writeTo(w, length)
	}
	if length < 0 {
		_, err := io.Copy(w, body)
		return err
	}
	n, err := io.Copy(w, io.LimitReader(body, length))
	if err == nil && n < length {
		err = io.ErrUnexpectedEOF
	}
	return err
}
