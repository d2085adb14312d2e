package mirror

import (
	"net/http"
	"strings"
	"testing"

	"nodecache/internal/ocierr"
)

// TestResolveRegistry: which registry and repository a path and ns name,
// for every combination of a registry in the path (allowed, not allowed,
// with a port), ns (absent, agreeing, disagreeing) and the default
// registry (set, none).
func TestResolveRegistry(t *testing.T) {
	allowed := map[string]bool{"up.test": true, "other.test": true, "localhost:5000": true, "docker.io": true, "localhost": true}
	tests := []struct {
		name         string
		path, ns     string
		def          string
		wantRegistry string
		wantRepo     string
		wantStatus   int // 0: served
		wantCode     string
		wantInMsg    string
	}{
		{"ns", "/v2/demo/app/manifests/v1", "up.test", "docker.io", "up.test", "demo/app", 0, "", ""},
		{"default", "/v2/demo/app/manifests/v1", "", "up.test", "up.test", "demo/app", 0, "", ""},
		{"path", "/v2/other.test/demo/app/manifests/v1", "", "up.test", "other.test", "demo/app", 0, "", ""},
		{"path in upper case", "/v2/Other.Test/demo/app/manifests/v1", "", "up.test", "other.test", "demo/app", 0, "", ""},
		{"path with port", "/v2/localhost:5000/app/blobs/" + testDigest, "", "", "localhost:5000", "app", 0, "", ""},
		{"path localhost", "/v2/localhost/app/tags/list", "", "", "localhost", "app", 0, "", ""},
		{"path and ns agree", "/v2/up.test/demo/app/manifests/v1", "up.test", "", "up.test", "demo/app", 0, "", ""},
		{"path and ns disagree", "/v2/other.test/demo/app/manifests/v1", "up.test", "", "other.test", "", http.StatusBadRequest, ocierr.CodeNameInvalid, `ns names "up.test"`},
		{"path without default", "/v2/up.test/demo/app/manifests/v1", "", "", "up.test", "demo/app", 0, "", ""},
		{"path not allowed", "/v2/evil.test/demo/app/manifests/v1", "", "up.test", "evil.test", "", http.StatusForbidden, ocierr.CodeDenied, "--allow-registry evil.test"},
		{"path with port not allowed, ns given", "/v2/evil.test:5000/app/manifests/v1", "up.test", "", "evil.test:5000", "", http.StatusForbidden, ocierr.CodeDenied, "--allow-registry evil.test:5000"},
		{"dotted namespace under ns", "/v2/my.team/app/manifests/v1", "up.test", "", "up.test", "my.team/app", 0, "", ""},
		{"dotted name of one component", "/v2/my.app/manifests/v1", "", "up.test", "up.test", "my.app", 0, "", ""},
		{"registry name alone is a repository", "/v2/other.test/manifests/v1", "", "up.test", "up.test", "other.test", 0, "", ""},
		{"no registry, default none", "/v2/demo/app/manifests/v1", "", "", "", "", http.StatusNotFound, ocierr.CodeNameUnknown, "--default-registry"},
		{"ns not allowed", "/v2/demo/app/manifests/v1", "evil.test", "up.test", "evil.test", "", http.StatusForbidden, ocierr.CodeDenied, "--allow-registry evil.test"},
		{"docker hub path, official image", "/v2/docker.io/alpine/manifests/3", "", "", "docker.io", "library/alpine", 0, "", ""},
		{"docker hub path, library given", "/v2/docker.io/library/alpine/manifests/3", "", "", "docker.io", "library/alpine", 0, "", ""},
		{"docker hub ns, official image", "/v2/alpine/manifests/3", "docker.io", "", "docker.io", "library/alpine", 0, "", ""},
		{"docker hub default, user image", "/v2/bitnami/redis/manifests/7", "", "docker.io", "docker.io", "bitnami/redis", 0, "", ""},
		{"docker hub, library/ makes the name too long", "/v2/docker.io/" + strings.Repeat("a", 250) + "/manifests/3", "", "", "docker.io", "", http.StatusBadRequest, ocierr.CodeNameInvalid, ""},
		{"other registry, one component stays", "/v2/up.test/alpine/manifests/3", "", "", "up.test", "alpine", 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, e := parseRoute(tt.path)
			if e != nil {
				t.Fatalf("parseRoute(%q): %v", tt.path, e)
			}
			registry, e := rt.resolve(tt.ns, allowed, tt.def)
			if registry != tt.wantRegistry {
				t.Errorf("registry %q, want %q", registry, tt.wantRegistry)
			}
			if tt.wantStatus != 0 {
				if e == nil || e.Status != tt.wantStatus || e.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantInMsg) {
					t.Fatalf("resolve = %v, want %d %s naming %q", e, tt.wantStatus, tt.wantCode, tt.wantInMsg)
				}
				return
			}
			if e != nil {
				t.Fatalf("resolve: %v", e)
			}
			if rt.name != tt.wantRepo {
				t.Fatalf("repository %q, want %q", rt.name, tt.wantRepo)
			}
		})
	}
}

// FuzzResolveRegistry: whatever the path, ns and default, a request is
// served only from an allowed registry, with a valid repository name; a
// registry named in the path is never swapped for another (served from
// it, or refused); and every refusal is a 4xx with a code.
func FuzzResolveRegistry(f *testing.F) {
	for _, s := range [][3]string{
		{"/v2/up.test/demo/app/manifests/v1", "", ""},
		{"/v2/up.test/demo/app/manifests/v1", "other.test", "up.test"},
		{"/v2/evil.test/app/blobs/" + testDigest, "up.test", ""},
		{"/v2/localhost:5000/app/tags/list", "", "docker.io"},
		{"/v2/docker.io/alpine/manifests/3", "docker.io", ""},
		{"/v2/alpine/manifests/3", "", "docker.io"},
		{"/v2/my.team/app/manifests/v1", "up.test", ""},
	} {
		f.Add(s[0], s[1], s[2])
	}
	allowed := map[string]bool{"up.test": true, "other.test": true, "localhost:5000": true, "docker.io": true}
	f.Fuzz(func(t *testing.T, path, ns, def string) {
		rt, e := parseRoute(path)
		if e != nil || rt.name == "" {
			return
		}
		ns, def = strings.ToLower(ns), strings.ToLower(def)
		inPath := rt.host
		registry, e := rt.resolve(ns, allowed, def)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" {
				t.Fatalf("refusal %d %q, want a 4xx with a code", e.Status, e.Code)
			}
			return
		}
		if !allowed[registry] {
			t.Fatalf("served from %q, not on the allow-list", registry)
		}
		if allowed[inPath] && registry != inPath {
			t.Fatalf("path names %q, served from %q", inPath, registry)
		}
		if inPath != "" && !allowed[inPath] && registry != ns {
			t.Fatalf("path names %q (not allowed), served from %q, ns %q", inPath, registry, ns)
		}
		if inPath == "" && registry != ns && (ns != "" || registry != def) {
			t.Fatalf("served from %q; ns %q, default %q", registry, ns, def)
		}
		if checkName(rt.name) != nil {
			t.Fatalf("invalid repository %q", rt.name)
		}
	})
}
