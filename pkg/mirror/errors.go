package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// Retry-After on a 429 to the client.
const (
	// DefaultRetryAfter is what a 429 tells the client when upstream gave
	// no usable Retry-After: long enough for a rate limit's window to
	// move, short enough that containerd's own backoff is not outwaited.
	DefaultRetryAfter = 10 * time.Second
	// MaxRetryAfter bounds upstream's Retry-After as passed on: a
	// registry asking for an hour should not park a node's pulls for an
	// hour when the limit may be per credential or lifted sooner.
	MaxRetryAfter = 60 * time.Second
)

// ErrAborted is the cause a server gives the contexts of the requests it
// ends itself (context.WithCancelCause under http.Server.BaseContext),
// such as those still running when a shutdown's grace is over. A request
// ended so is no hang-up of its client: it is not logged or counted as
// canceled.
var ErrAborted = errors.New("request aborted by the server")

// statusClientClosed is what the access log and the metrics give a
// request whose client hung up before its answer was complete: nginx's
// 499, which log tools know. It is never sent (nobody is there to read
// it), and it is no error of this server or of the registry.
const statusClientClosed = 499

// upstreamError turns a non-success upstream answer into the error the
// client gets. kind is the route's, for the *_UNKNOWN codes; header is
// the answer's headers (nil if none), for Retry-After.
func upstreamError(registry string, kind ociref.Kind, status int, header http.Header) *ocierr.Error {
	switch {
	case status == http.StatusNotFound && (kind == ociref.KindManifests || kind == ociref.KindReferrers):
		return ocierr.Errorf(http.StatusNotFound, ocierr.CodeManifestUnknown, "manifest unknown to %s", registry)
	case status == http.StatusNotFound && kind == ociref.KindTags:
		return ocierr.Errorf(http.StatusNotFound, ocierr.CodeNameUnknown, "repository unknown to %s", registry)
	case status == http.StatusNotFound:
		return ocierr.Errorf(http.StatusNotFound, ocierr.CodeBlobUnknown, "blob unknown to %s", registry)
	case status == http.StatusBadRequest:
		return ocierr.Errorf(http.StatusBadRequest, ocierr.CodeUnsupported, "%s refused the request as invalid", registry)
	case status == http.StatusUnauthorized:
		return ocierr.Errorf(http.StatusUnauthorized, ocierr.CodeUnauthorized, "%s requires authentication", registry)
	case status == http.StatusForbidden:
		return ocierr.Errorf(http.StatusForbidden, ocierr.CodeDenied, "%s denied access", registry)
	case status == http.StatusTooManyRequests:
		e := ocierr.Errorf(http.StatusTooManyRequests, ocierr.CodeTooManyRequests, "%s is rate limiting requests", registry)
		e.Header = http.Header{"Retry-After": {retryAfter(header.Get("Retry-After"))}}
		return e
	case status >= 500:
		return ocierr.Errorf(http.StatusBadGateway, ocierr.CodeUnavailable, "%s answered %d", registry, status)
	default:
		return ocierr.Errorf(http.StatusBadGateway, ocierr.CodeUnavailable, "%s answered an unexpected %d", registry, status)
	}
}

// retryAfter is the Retry-After passed to the client for upstream's v:
// its delay in seconds, at most MaxRetryAfter, or DefaultRetryAfter if v
// is absent or not a number of seconds (an HTTP date would need a clock
// shared with upstream's to mean anything).
func retryAfter(v string) string {
	d := DefaultRetryAfter
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 {
		d = min(time.Duration(min(n, int64(MaxRetryAfter/time.Second)))*time.Second, MaxRetryAfter)
	}
	return strconv.FormatInt(int64(d/time.Second), 10)
}

// unreachable is the answer when registry could not be reached. It names
// the registry the client asked for and nothing of the endpoint dialled
// for it (an internal mirror, an address), which the log keeps.
func unreachable(registry string) *ocierr.Error {
	return ocierr.Errorf(http.StatusServiceUnavailable, ocierr.CodeUnavailable, "registry %s is unreachable", registry)
}

// asError is the answer a client gets for err: an *ocierr.Error as it
// is, the errors of the packages the mirror uses mapped to theirs, a fill
// out of time a 504, and anything else a 500.
func asError(err error) *ocierr.Error {
	var e *ocierr.Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, upstream.ErrUnreachable):
		return unreachable("upstream")
	case errors.Is(err, context.DeadlineExceeded):
		// The fill ran out of its --fill-timeout: the upstream's failure,
		// said without its internal URL.
		return &ocierr.Error{Status: http.StatusGatewayTimeout, Code: ocierr.CodeUnavailable, Message: "the upstream registry did not answer within the fill timeout"}
	case errors.Is(err, diskstore.ErrUnsupported):
		return &ocierr.Error{Status: http.StatusBadRequest, Code: ocierr.CodeDigestInvalid, Message: err.Error()}
	default:
		return &ocierr.Error{Status: http.StatusInternalServerError, Code: ocierr.CodeUnavailable, Message: "internal error: " + err.Error()}
	}
}

// nullDetail is the "detail" of the mirror's error answers, which have
// always carried the field, as null when there is nothing to say.
var nullDetail = json.RawMessage("null")

// writeError answers with err as OCI error JSON (asError, ocierr.Write).
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := *asError(err) // a copy: errors may be shared variables
	if e.Detail == nil {
		e.Detail = nullDetail
	}
	ocierr.Write(w, r, &e)
}
