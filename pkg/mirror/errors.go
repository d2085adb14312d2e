package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// upstreamError turns a non-success upstream answer into the error the
// client gets. kind is "manifests" or "blobs", for the *_UNKNOWN codes.
func upstreamError(registry string, kind ociref.Kind, status int) *ocierr.Error {
	switch {
	case status == http.StatusNotFound && kind == ociref.KindManifests:
		return ocierr.Errorf(http.StatusNotFound, ocierr.CodeManifestUnknown, "manifest unknown to %s", registry)
	case status == http.StatusNotFound:
		return ocierr.Errorf(http.StatusNotFound, ocierr.CodeBlobUnknown, "blob unknown to %s", registry)
	case status == http.StatusUnauthorized:
		return ocierr.Errorf(http.StatusUnauthorized, ocierr.CodeUnauthorized, "%s requires authentication", registry)
	case status == http.StatusForbidden:
		return ocierr.Errorf(http.StatusForbidden, ocierr.CodeDenied, "%s denied access", registry)
	case status == http.StatusTooManyRequests:
		return ocierr.Errorf(http.StatusTooManyRequests, ocierr.CodeTooManyRequests, "%s is rate limiting requests", registry)
	case status >= 500:
		return ocierr.Errorf(http.StatusBadGateway, ocierr.CodeUnavailable, "%s answered %d", registry, status)
	default:
		return ocierr.Errorf(http.StatusBadGateway, ocierr.CodeUnavailable, "%s answered an unexpected %d", registry, status)
	}
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
		return &ocierr.Error{Status: http.StatusServiceUnavailable, Code: ocierr.CodeUnavailable, Message: err.Error()}
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
