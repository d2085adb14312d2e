package registrytest

import (
	"fmt"
	"net/http"
)

// Route returns a request matcher for faults: it matches requests with this
// method ("" for any) and route kind ("" for any), such as
// Route(http.MethodGet, KindBlobs).
func Route(method, kind string) func(*http.Request) bool {
	return func(req *http.Request) bool {
		k, _ := classify(req.URL.Path)
		return (method == "" || req.Method == method) && (kind == "" || k == kind)
	}
}

// FailWith returns a Fault that answers requests matching match (all if nil)
// with status code and an OCI error body, such as 503 or 429.
func FailWith(code int, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
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

// CutAfter returns a Fault that lets the registry serve requests matching
// match (all if nil) but aborts the connection once n body bytes are sent:
// the client sees the real status and headers, then a truncated body. With
// n == 0 the connection closes before the headers. Responses of at most n
// bytes pass whole.
func (r *Registry) CutAfter(n int64, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		r.app.ServeHTTP(&cutWriter{ResponseWriter: w, left: n}, req)
		return true
	}
}

// cutWriter passes left bytes, then aborts the handler.
type cutWriter struct {
	http.ResponseWriter
	left int64
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
	// As net/http/httputil.ReverseProxy does: end the connection, not the
	// response, so the client cannot mistake it for a complete body.
	panic(http.ErrAbortHandler)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *cutWriter) Unwrap() http.ResponseWriter {
	return w.ResponseWriter
}
