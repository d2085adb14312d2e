package ocierr

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name   string
		method string
		err    *Error
		body   string
		header map[string]string // "" means absent
	}{
		{
			name: "no detail", method: http.MethodGet,
			err:  &Error{Status: http.StatusForbidden, Code: CodeDenied, Message: "no"},
			body: `{"errors":[{"code":"DENIED","message":"no"}]}`,
			header: map[string]string{"Content-Type": "application/json", "Content-Length": "45", "Allow": "",
				"Content-Range": "", "Docker-Content-Digest": "", "Etag": "", "Accept-Ranges": ""},
		},
		{
			name: "null detail", method: http.MethodGet,
			err:    &Error{Status: http.StatusNotFound, Code: CodeBlobUnknown, Message: "gone", Detail: json.RawMessage("null")},
			body:   `{"errors":[{"code":"BLOB_UNKNOWN","message":"gone","detail":null}]}`,
			header: map[string]string{"Content-Length": "67"},
		},
		{
			name: "detail", method: http.MethodGet,
			err:  &Error{Status: http.StatusBadRequest, Code: CodeDigestInvalid, Message: "bad", Detail: map[string]int{"n": 1}},
			body: `{"errors":[{"code":"DIGEST_INVALID","message":"bad","detail":{"n":1}}]}`,
		},
		{
			name: "405 says what is allowed", method: http.MethodPost,
			err:    Errorf(http.StatusMethodNotAllowed, CodeUnsupported, "%s is not supported", "POST"),
			body:   `{"errors":[{"code":"UNSUPPORTED","message":"POST is not supported"}]}`,
			header: map[string]string{"Allow": "GET, HEAD"},
		},
		{
			name: "405 of a resource that allows nothing", method: http.MethodGet,
			err: &Error{Status: http.StatusMethodNotAllowed, Code: CodeUnsupported, Message: "no",
				Header: http.Header{"Allow": {""}}},
			body:   `{"errors":[{"code":"UNSUPPORTED","message":"no"}]}`,
			header: map[string]string{"Allow": ""},
		},
		{
			name: "HEAD has the length and no body", method: http.MethodHead,
			err:    &Error{Status: http.StatusNotFound, Code: CodeManifestUnknown, Message: "m"},
			header: map[string]string{"Content-Length": "54"},
		},
		{
			name: "extra headers", method: http.MethodGet,
			err: &Error{Status: http.StatusRequestedRangeNotSatisfiable, Code: CodeRangeInvalid, Message: "r",
				Header: http.Header{"Content-Range": {"bytes */10"}}},
			body:   `{"errors":[{"code":"RANGE_INVALID","message":"r"}]}`,
			header: map[string]string{"Content-Range": "bytes */10"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			// Headers of the content the error replaces.
			for _, k := range []string{"Content-Range", "Docker-Content-Digest", "Etag", "Accept-Ranges", "Content-Length"} {
				w.Header().Set(k, "stale")
			}
			Write(w, httptest.NewRequest(tt.method, "/", nil), tt.err)
			if w.Code != tt.err.Status {
				t.Errorf("status %d, want %d", w.Code, tt.err.Status)
			}
			if got := w.Body.String(); got != tt.body {
				t.Errorf("body %s, want %s", got, tt.body)
			}
			for k, want := range tt.header {
				if got := w.Header().Get(k); got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	e := Errorf(http.StatusBadGateway, CodeUnavailable, "%s answered %d", "r.example", 500)
	if got, want := e.Error(), "502 UNAVAILABLE: r.example answered 500"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}
