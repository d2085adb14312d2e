package registrytest

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
)

// The named faults below each answer the requests their match accepts (all
// if match is nil) and let the registry serve the rest. Combine them with
// Faults to give different paths or methods different faults; Route and
// Path build matchers.

// Route returns a request matcher for faults: it matches requests with this
// method ("" for any) and route kind ("" for any), such as
// Route(http.MethodGet, KindBlobs).
func Route(method, kind string) func(*http.Request) bool {
	return func(req *http.Request) bool {
		k, _ := classify(req.URL.Path)
		return (method == "" || req.Method == method) && (kind == "" || k == kind)
	}
}

// Path returns a request matcher for faults: it matches requests with this
// method ("" for any) and exactly this URL path, such as
// Path(http.MethodGet, "/v2/app/blobs/"+d.String()).
func Path(method, path string) func(*http.Request) bool {
	return func(req *http.Request) bool {
		return (method == "" || req.Method == method) && req.URL.Path == path
	}
}

// Faults returns a Fault that tries each of fs in turn: the first that
// handles a request wins. Nil entries are skipped.
func Faults(fs ...Fault) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		for _, f := range fs {
			if f != nil && f(w, req) {
				return true
			}
		}
		return false
	}
}

// FailWith returns a Fault that answers requests matching match (all if nil)
// with status code and an OCI error body, such as 503 or 429.
func FailWith(code int, match func(*http.Request) bool) Fault {
	return failWith(code, "", match)
}

// TooManyRequests returns a Fault that answers requests matching match (all
// if nil) with 429, an OCI TOOMANYREQUESTS body and Retry-After set to
// retryAfter, such as "2" (seconds) or an HTTP date.
func TooManyRequests(retryAfter string, match func(*http.Request) bool) Fault {
	return failWith(http.StatusTooManyRequests, retryAfter, match)
}

func failWith(code int, retryAfter string, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, errorCode(code), http.StatusText(code))
		return true
	}
}

// errorCode is the OCI distribution error code closest to an HTTP status.
func errorCode(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "TOOMANYREQUESTS"
	case http.StatusUnauthorized:
		return "UNAUTHORIZED"
	case http.StatusForbidden:
		return "DENIED"
	case http.StatusNotFound:
		return "NAME_UNKNOWN"
	}
	return "UNAVAILABLE"
}

// Redirect returns a Fault that answers requests matching match (all if
// nil) with 307 Temporary Redirect to target, whatever it is: another
// registry, an internal address, an http:// downgrade.
func Redirect(target string, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		w.Header().Set("Location", target)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return true
	}
}

// CutAfter returns a Fault that lets the registry serve requests matching
// match (all if nil) but aborts the connection once n body bytes are sent:
// the client sees the real status and headers, then a truncated body. With
// n == 0 the connection closes before the headers. Responses of at most n
// bytes pass whole. The connection ends with a close; ResetAfter ends it
// with a TCP reset instead.
func (r *Registry) CutAfter(n int64, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		r.app.ServeHTTP(&cutWriter{ResponseWriter: w, left: n}, req)
		return true
	}
}

// ResetAfter is CutAfter ending the connection with a TCP reset (RST)
// rather than a close, as a crashed proxy or a dropped NAT entry does: the
// client's read fails with "connection reset by peer".
func (r *Registry) ResetAfter(n int64, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		r.app.ServeHTTP(&cutWriter{ResponseWriter: w, left: n, reset: true}, req)
		return true
	}
}

// cutWriter passes left bytes, then aborts the handler.
type cutWriter struct {
	http.ResponseWriter
	left  int64
	reset bool
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= w.left {
		n, err := w.ResponseWriter.Write(p)
		w.left -= int64(n)
		return n, err
	}
	if w.left > 0 {
		_, _ = w.ResponseWriter.Write(p[:w.left])
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
	if w.reset {
		resetConn(w.ResponseWriter)
	}
	// As net/http/httputil.ReverseProxy does: end the connection, not the
	// response, so the client cannot mistake it for a complete body.
	panic(http.ErrAbortHandler)
}

// resetConn takes the connection from net/http and closes it with SO_LINGER
// 0, which sends a TCP RST instead of a FIN.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *cutWriter) Unwrap() http.ResponseWriter {
	return w.ResponseWriter
}

// WrongLength returns a Fault that lets the registry serve requests
// matching match (all if nil) with Content-Length off by delta from the
// body's real length. With delta > 0 the body ends early and the
// connection closes; with delta < 0 net/http stops the body at the
// declared length, so the client gets a complete response whose bytes are
// a prefix of the real ones. HEAD answers carry the wrong length too.
func (r *Registry) WrongLength(delta int64, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		r.app.ServeHTTP(&lengthWriter{ResponseWriter: w, delta: delta}, req)
		return true
	}
}

// lengthWriter shifts Content-Length by delta when the headers go out.
// When the declared length is shorter, it sends the bytes up to it and
// drops the rest (net/http would drop the whole write that crosses it).
type lengthWriter struct {
	http.ResponseWriter
	delta   int64
	started bool
	left    int64 // bytes the declared length still allows; -1 for no limit
}

func (w *lengthWriter) WriteHeader(code int) {
	if !w.started {
		w.started, w.left = true, -1
		if n, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); err == nil {
			w.left = max(n+w.delta, 0)
			w.Header().Set("Content-Length", strconv.FormatInt(w.left, 10))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *lengthWriter) Write(p []byte) (int, error) {
	if !w.started {
		w.WriteHeader(http.StatusOK)
	}
	if w.left < 0 || int64(len(p)) <= w.left {
		n, err := w.ResponseWriter.Write(p)
		if w.left >= 0 {
			w.left -= int64(n)
		}
		return n, err
	}
	n, err := w.ResponseWriter.Write(p[:w.left])
	w.left -= int64(n)
	if err == nil {
		err = http.ErrContentLength
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *lengthWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WrongBytes returns a Fault that lets the registry serve requests matching
// match (all if nil) with the byte at offset at of each response body
// inverted: status, headers and length are right, the content is not.
// Bodies of at most at bytes pass unchanged.
func (r *Registry) WrongBytes(at int64, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		r.app.ServeHTTP(&corruptWriter{ResponseWriter: w, at: at}, req)
		return true
	}
}

// corruptWriter inverts the byte at offset at of the body.
type corruptWriter struct {
	http.ResponseWriter
	at, off int64
}

func (w *corruptWriter) Write(p []byte) (int, error) {
	if i := w.at - w.off; i >= 0 && i < int64(len(p)) {
		q := append([]byte(nil), p...)
		q[i] ^= 0xff
		p = q
	}
	n, err := w.ResponseWriter.Write(p)
	w.off += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *corruptWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
