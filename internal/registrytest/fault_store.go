package registrytest

import (
	"net/http"
)

// NeverEndingBody returns a Fault that answers requests matching match
// (all if nil) with 200 and a body without a length, sent chunked, that
// never ends: bytes until the client goes away. ended, if not nil, gets a
// value (without blocking) each time such an answer ends because the
// client went.
func NeverEndingBody(match func(*http.Request) bool, ended chan<- struct{}) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		chunk := Random(7, 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				break
			}
			if err := http.NewResponseController(w).Flush(); err != nil {
				break
			}
		}
		if ended != nil {
			select {
			case ended <- struct{}{}:
			default:
			}
		}
		return true
	}
}

// UnsizedBody returns a Fault that answers requests matching match (all if
// nil) with 200, the Content-Type contentType and body, sent chunked
// without a Content-Length.
func UnsizedBody(body []byte, contentType string, match func(*http.Request) bool) Fault {
	return func(w http.ResponseWriter, req *http.Request) bool {
		if match != nil && !match(req) {
			return false
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for off := 0; off < len(body); off += 64 << 10 {
			if _, err := w.Write(body[off:min(off+64<<10, len(body))]); err != nil {
				return true
			}
			if err := rc.Flush(); err != nil {
				return true
			}
		}
		return true
	}
}
