package mirror

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"nodecache/internal/ociref"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// Error codes from the OCI distribution spec, plus the two that
// docker/distribution uses for conditions the spec leaves open.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeManifestInvalid = "MANIFEST_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	codeDenied          = "DENIED"
	codeUnauthorized    = "UNAUTHORIZED"
	codeTooManyRequests = "TOOMANYREQUESTS"
	codeRangeInvalid    = "RANGE_INVALID" // as docker/distribution; the spec has no code for 416
	codeUnavailable     = "UNAVAILABLE"   // as docker/distribution, for 502 and 503
)

// Error is an answer the mirror gives instead of content. Handlers return
// it (or any error, which becomes a 500) and writeError renders it.
type Error struct {
	Status  int
	Code    string
	Message string
	Detail  any
	Header  http.Header // extra response headers, e.g. Content-Range on 416
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// upstreamError turns a non-success upstream answer into the error the
// client gets. kind is "manifests" or "blobs", for the *_UNKNOWN codes.
func upstreamError(registry string, kind ociref.Kind, status int) *Error {
	switch {
	case status == http.StatusNotFound && kind == ociref.KindManifests:
		return errorf(http.StatusNotFound, codeManifestUnknown, "manifest unknown to %s", registry)
	case status == http.StatusNotFound:
		return errorf(http.StatusNotFound, codeBlobUnknown, "blob unknown to %s", registry)
	case status == http.StatusUnauthorized:
		return errorf(http.StatusUnauthorized, codeUnauthorized, "%s requires authentication", registry)
	case status == http.StatusForbidden:
		return errorf(http.StatusForbidden, codeDenied, "%s denied access", registry)
	case status == http.StatusTooManyRequests:
		return errorf(http.StatusTooManyRequests, codeTooManyRequests, "%s is rate limiting requests", registry)
	case status >= 500:
		return errorf(http.StatusBadGateway, codeUnavailable, "%s answered %d", registry, status)
	default:
		return errorf(http.StatusBadGateway, codeUnavailable, "%s answered an unexpected %d", registry, status)
	}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail"`
}

// writeError is the one place where errors become OCI error JSON.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, upstream.ErrUnreachable):
		e = &Error{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: err.Error()}
	case errors.Is(err, diskstore.ErrUnsupported):
		e = &Error{Status: http.StatusBadRequest, Code: codeDigestInvalid, Message: err.Error()}
	default:
		e = &Error{Status: http.StatusInternalServerError, Code: codeUnavailable, Message: "internal error: " + err.Error()}
	}
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
	h := w.Header()
	for _, k := range []string{"Content-Range", "Docker-Content-Digest", "Etag", "Accept-Ranges", "Content-Length"} {
		h.Del(k)
	}
	for k, v := range e.Header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if e.Status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, HEAD")
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
