package fastlane

import (
	"bufio"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter of a request answered in the loop.
// It writes to the connection's buffer; finish sends the answer.
type response struct {
	c       *conn
	req     *http.Request
	header  http.Header
	fixed   http.Header // header as WriteHeader found it, if it is not sent yet
	status  int         // 0 until WriteHeader
	sent    bool        // the status line and headers are in the buffer
	length  int64       // the Content-Length declared, -1 if none
	written int64       // body bytes written
	chunked bool
	body    bool // a body may follow the headers
	close   bool // the connection closes after this answer
	err     error
}

func (w *response) Header() http.Header { return w.header }

// outHeader is the header the answer sends: as WriteHeader fixed it, if
// it did, else the handler's map.
func (w *response) outHeader() http.Header {
	if w.fixed != nil {
		return w.fixed
	}
	return w.header
}

// WriteHeader sets the status and fixes the headers: later changes to
// the map do not count, as in net/http. Headers without a Content-Type
// wait, as in net/http, for the first body bytes to sniff one from, or a
// flush, or the end of the answer; the others go to the buffer now. An
// informational (1xx) status is not sent: no handler of the loop uses one.
func (w *response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic("fastlane: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if w.status != 0 || code < 200 {
		return
	}
	w.status = code
	if _, ok := w.header["Content-Type"]; ok {
		w.sendHeader(nil)
		return
	}
	w.fixed = w.header.Clone()
}

// sendHeader writes the status line and headers to the buffer, once,
// with p the first body bytes. As in net/http, a Content-Length the
// handler set frames the body; without one, a body is sent chunked;
// Date is added if missing, and Content-Type sniffed from p.
func (w *response) sendHeader(p []byte) {
	if w.sent {
		return
	}
	w.sent = true
	if w.status == 0 {
		w.status = http.StatusOK
	}
	code, h := w.status, w.outHeader()
	w.frame(code, h, p)
	if _, ok := h["Date"]; !ok { // a nil Date asks for none, as in net/http
		h["Date"] = []string{time.Now().UTC().Format(http.TimeFormat)}
	}
	// The connection closes after this answer if the client or the
	// handler asked, or the server is shutting down (as net/http).
	w.close = w.req.Close || h.Get("Connection") == "close" || w.c.s.closing.Load()
	if w.close {
		h["Connection"] = []string{"close"}
	}
	bw := w.c.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\n")
	if err := writeHeader(bw, h); err != nil {
		w.fail(err)
	}
	bw.WriteString("\r\n")
}

// frame decides how the body of an answer with status code and headers
// h is framed, and sets the headers that say so, as net/http does: by
// the handler's Content-Length, else chunked; none for HEAD, 204 and
// 304. A missing Content-Type is sniffed from p, the first body bytes.
func (w *response) frame(code int, h http.Header, p []byte) {
	if cl := h.Get("Content-Length"); cl != "" {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			h.Del("Content-Length")
		} else {
			w.length = n
		}
	}
	allowed := code != http.StatusNoContent && code != http.StatusNotModified
	w.body = allowed && w.req.Method != http.MethodHead
	if _, ok := h["Content-Type"]; !ok && allowed && len(p) > 0 &&
		h.Get("Content-Encoding") == "" && h.Get("Transfer-Encoding") == "" {
		h["Content-Type"] = []string{http.DetectContentType(p)}
	}
	switch {
	case !allowed: // as net/http's suppressedHeaders
		if code == http.StatusNotModified {
			h.Del("Content-Type")
		}
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
		w.length = -1
	case !w.body: // HEAD
		h.Del("Transfer-Encoding")
	case w.length >= 0:
		h.Del("Transfer-Encoding")
	default:
		w.chunked = true
		h["Transfer-Encoding"] = []string{"chunked"}
	}
}

// writeHeader writes h as http.Header.Write does, sorted by name, without
// the sorter and the string replacer Write takes for each call. Headers
// that Write would change (an invalid name, which it drops; a value with
// a line break or spaces around it, which it cleans) go through Write.
func writeHeader(bw *bufio.Writer, h http.Header) error {
	var buf [16]string
	keys := buf[:0]
	for k, vs := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return h.Write(bw)
		}
		for _, v := range vs {
			if !cleanValue(v) {
				return h.Write(bw)
			}
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	return nil
}

// cleanValue reports whether v is a header value Header.Write sends as
// it is: no CR or LF, no space or tab at either end.
func cleanValue(v string) bool {
	if v != "" && (isSpace(v[0]) || isSpace(v[len(v)-1])) {
		return false
	}
	return strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, '\n') < 0
}

// isSpace is textproto.TrimString's whitespace.
func isSpace(b byte) bool { return b == ' ' || b == '\t' || b == '\n' || b == '\r' }

// Write writes body bytes: chunked, or checked against the declared
// length. A HEAD answer's body is dropped, as net/http drops it.
func (w *response) Write(p []byte) (int, error) {
	w.sendHeader(p)
	if w.err != nil {
		return 0, w.err
	}
	if !w.body {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, nil
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	if err != nil {
		w.fail(err)
	}
	return n, err
}

// fail records the first error writing the answer, and ends the
// connection's context, as net/http ends a request's when a write to its
// client fails: the handler learns that its client is gone.
func (w *response) fail(err error) {
	if w.err == nil {
		w.err = err
		w.c.cancel(err)
	}
}

// FlushError sends what is buffered, headers first if not yet written.
// http.ResponseController finds it.
func (w *response) FlushError() error {
	w.sendHeader(nil)
	if w.err != nil {
		return w.err
	}
	if err := w.c.bw.Flush(); err != nil {
		w.fail(err)
	}
	return w.err
}

// Flush is FlushError for an http.Flusher.
func (w *response) Flush() { w.FlushError() }

// finish completes the answer after the handler returned and sends it. A
// handler that wrote nothing answers 200 with an empty body, which has a
// Content-Length: 0 but for HEAD, as in net/http. It reports
// whether the connection can carry another request: not if the client or
// the handler asked to close it, a write failed, or the body fell short
// of its declared length (the client would wait for the rest).
func (w *response) finish() bool {
	if !w.sent {
		h := w.outHeader()
		if w.req.Method != http.MethodHead && w.status != http.StatusNoContent && w.status != http.StatusNotModified &&
			h.Get("Content-Length") == "" && h.Get("Transfer-Encoding") == "" {
			h["Content-Length"] = []string{"0"}
		}
		w.sendHeader(nil)
	}
	if w.chunked && w.err == nil {
		if _, err := w.c.bw.WriteString("0\r\n\r\n"); err != nil {
			w.fail(err)
		}
	}
	short := w.body && w.length >= 0 && w.written < w.length
	if w.err == nil {
		if err := w.c.bw.Flush(); err != nil {
			w.fail(err)
		}
	}
	return w.err == nil && !w.close && !short
}
