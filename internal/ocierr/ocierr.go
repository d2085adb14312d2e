// Package ocierr is the one place where errors become OCI error JSON, the
// answer body of the OCI distribution spec:
//
//	{"errors":[{"code":"BLOB_UNKNOWN","message":"...","detail":...}]}
//
// pkg/mirror (the pull path) and pkg/peer (the peer API) answer with it.
// Each decides which Error an error of its own becomes; Write renders it.
package ocierr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Error codes from the OCI distribution spec, plus the two that
// docker/distribution uses for conditions the spec leaves open.
const (
	CodeBlobUnknown     = "BLOB_UNKNOWN"
	CodeManifestUnknown = "MANIFEST_UNKNOWN"
	CodeNameInvalid     = "NAME_INVALID"
	CodeNameUnknown     = "NAME_UNKNOWN"
	CodeDigestInvalid   = "DIGEST_INVALID"
	CodeManifestInvalid = "MANIFEST_INVALID"
	CodeUnsupported     = "UNSUPPORTED"
	CodeDenied          = "DENIED"
	CodeUnauthorized    = "UNAUTHORIZED"
	CodeTooManyRequests = "TOOMANYREQUESTS"
	CodeRangeInvalid    = "RANGE_INVALID" // as docker/distribution; the spec has no code for 416
	CodeUnavailable     = "UNAVAILABLE"   // as docker/distribution, for 502 and 503
)

// Error is an answer given instead of content: an HTTP status and one
// entry of OCI error JSON.
type Error struct {
	Status  int
	Code    string
	Message string
	// Detail is the entry's "detail", any value encoding/json can write;
	// nil leaves the field out.
	Detail any
	Header http.Header // extra response headers, e.g. Content-Range on 416
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// Errorf returns an Error whose message is formatted as fmt.Sprintf does.
func Errorf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

type body struct {
	Errors []entry `json:"errors"`
}

type entry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// Write writes e as r's answer: its status, its headers, and the JSON
// (left out for a HEAD, with the Content-Length it would have). Headers
// that described content (Content-Range, Docker-Content-Digest, Etag,
// Accept-Ranges, Content-Length) are dropped, since the answer is not that
// content; a 405 says which methods are allowed: GET and HEAD unless
// e.Header names them (an empty Allow: the resource allows none).
func Write(w http.ResponseWriter, r *http.Request, e *Error) {
	b, err := json.Marshal(body{Errors: []entry{{Code: e.Code, Message: e.Message, Detail: e.Detail}}})
	if err != nil {
		// A Detail encoding/json cannot write: the answer still says
		// what went wrong, without it.
		b, _ = json.Marshal(body{Errors: []entry{{Code: e.Code, Message: e.Message}}})
	}
	h := w.Header()
	for _, k := range []string{"Content-Range", "Docker-Content-Digest", "Etag", "Accept-Ranges", "Content-Length"} {
		h.Del(k)
	}
	for k, v := range e.Header {
		h[k] = v
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if _, set := e.Header["Allow"]; e.Status == http.StatusMethodNotAllowed && !set {
		h.Set("Allow", "GET, HEAD")
	}
	w.WriteHeader(e.Status)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}
