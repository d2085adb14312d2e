package registrytest

import (
	"net/http"
)

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
