package registrytest

import "net/http"

// HoldAfter returns a Fault that lets the registry serve requests matching
// match (all if nil) but, once n body bytes are sent (n == 0: right after
// the headers), flushes them and sends nothing more: the connection stays
// open, silent, until the client goes or release is closed, then the
// handler aborts so the body can never look complete. It is an upstream
// whose body stalls.
func (r *Registry) HoldAfter(n int64, release <-chan struct{}, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		r.app.ServeHTTP(&holdWriter{ResponseWriter: w, left: n, req: req, release: release}, req)
		return true
	}
}

// holdWriter passes left bytes, then holds the connection silent.
type holdWriter struct {
	http.ResponseWriter
	left    int64
	req     *http.Request
	release <-chan struct{}
}

func (w *holdWriter) Write(p []byte) (int, error) {
	if int64(len(p)) < w.left {
		n, err := w.ResponseWriter.Write(p)
		w.left -= int64(n)
		return n, err
	}
	if w.left > 0 {
		_, _ = w.ResponseWriter.Write(p[:w.left])
		w.left = 0
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
	select {
	case <-w.req.Context().Done():
	case <-w.release:
	}
	panic(http.ErrAbortHandler)
}

// WriteHeader sends the headers at once when nothing is to follow them.
func (w *holdWriter) WriteHeader(code int) {
	w.ResponseWriter.WriteHeader(code)
	if w.left == 0 {
		_ = http.NewResponseController(w.ResponseWriter).Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *holdWriter) Unwrap() http.ResponseWriter {
	return w.ResponseWriter
}
