package daemon

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"nodecache/pkg/diskstore"
)

// FuzzAdmin: whatever a client sends, the admin API answers 200 with
// JSON, or an error status with the OCI error JSON, and never panics.
func FuzzAdmin(f *testing.F) {
	f.Add("ref", `{"digests":["sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"]}`)
	f.Add("docker.io/library/nginx:latest", `{}`)
	f.Add("x@sha256:00", `{"digests":[1]}`)
	store, err := diskstore.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	mux := http.NewServeMux()
	(&admin{store: store}).register(mux)
	f.Fuzz(func(t *testing.T, ref, body string) {
		for _, req := range []*http.Request{
			httptest.NewRequest(http.MethodPost, "/admin/evict?ref="+url.QueryEscape(ref), nil),
			httptest.NewRequest(http.MethodPost, "/admin/committed", strings.NewReader(body)),
			httptest.NewRequest(http.MethodGet, "/admin/images", nil),
		} {
			req.RemoteAddr = "127.0.0.1:40000" // a client on this node
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, req)
			var v map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
				t.Fatalf("%s %s: %d, not JSON: %q", req.Method, req.URL, rec.Code, rec.Body.String())
			}
			if _, isErr := v["errors"]; (rec.Code != http.StatusOK) != isErr {
				t.Fatalf("%s %s: %d with %q", req.Method, req.URL, rec.Code, rec.Body.String())
			}
		}
	})
}
