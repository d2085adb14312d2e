package mirror

import (
	"net/http"
	"strings"
	"testing"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
)

const testDigest = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"

func TestParseRoute(t *testing.T) {
	tests := []struct {
		path       string
		wantKind   ociref.Kind
		wantName   string
		wantStatus int // 0: parses
		wantCode   string
	}{
		{"/v2/", ociref.KindBase, "", 0, ""},
		{"/v2", ociref.KindBase, "", 0, ""},
		{"/v2/library/nginx/manifests/latest", ociref.KindManifests, "library/nginx", 0, ""},
		{"/v2/a/b/c/d/manifests/" + testDigest, ociref.KindManifests, "a/b/c/d", 0, ""},
		{"/v2/nginx/blobs/" + testDigest, ociref.KindBlobs, "nginx", 0, ""},
		{"/v2/my-org/my_app.x/blobs/" + testDigest, ociref.KindBlobs, "my-org/my_app.x", 0, ""},
		{"/v2/x/manifests/y/manifests/v1", ociref.KindManifests, "x/manifests/y", 0, ""},
		{"/v2/library/nginx/tags/list", ociref.KindTags, "library/nginx", 0, ""},
		{"/v2/library/nginx/referrers/" + testDigest, ociref.KindReferrers, "library/nginx", 0, ""},
		{"/v2/_catalog", "", "", http.StatusMethodNotAllowed, ocierr.CodeUnsupported},
		{"/v2/library/nginx/blobs/uploads/", "", "", http.StatusMethodNotAllowed, ocierr.CodeUnsupported},
		{"/v2/library/nginx/blobs/uploads/abc", "", "", http.StatusMethodNotAllowed, ocierr.CodeUnsupported},
		{"/v2/Library/nginx/manifests/latest", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2/library/../etc/manifests/latest", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2/library//nginx/manifests/latest", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2//manifests/latest", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2/" + strings.Repeat("a", 256) + "/manifests/latest", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2/nginx/manifests/-bad", "", "", http.StatusNotFound, ocierr.CodeManifestUnknown},
		{"/v2/nginx/manifests/" + strings.Repeat("t", 129), "", "", http.StatusNotFound, ocierr.CodeManifestUnknown},
		{"/v2/nginx/manifests/.INVALID_MANIFEST_NAME", "", "", http.StatusNotFound, ocierr.CodeManifestUnknown},
		{"/v2/nginx/blobs/latest", "", "", http.StatusBadRequest, ocierr.CodeDigestInvalid},
		{"/v2/nginx/blobs/sha256:abc", "", "", http.StatusBadRequest, ocierr.CodeDigestInvalid},
		{"/v2/nginx/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", "", "", http.StatusBadRequest, ocierr.CodeDigestInvalid},
		{"/v2/nginx/manifests/sha384:" + strings.Repeat("a", 96), "", "", http.StatusBadRequest, ocierr.CodeDigestInvalid},
		{"/v2/nginx/blobs/" + strings.ToUpper(testDigest), "", "", http.StatusBadRequest, ocierr.CodeDigestInvalid},
		{"/v2/nginx/other/x", "", "", http.StatusNotFound, ocierr.CodeNameUnknown},
		{"/v3/nginx/manifests/latest", "", "", http.StatusNotFound, ocierr.CodeNameUnknown},
		// A first component with the form of a registry is held apart; the
		// name after it is checked either way (resolve decides).
		{"/v2/docker.io/library/alpine/manifests/3", ociref.KindManifests, "library/alpine", 0, ""},
		{"/v2/localhost:5000/app/blobs/" + testDigest, ociref.KindBlobs, "app", 0, ""},
		{"/v2/[::1]:5000/a/b/tags/list", ociref.KindTags, "a/b", 0, ""},
		{"/v2/up.test/demo/app/referrers/" + testDigest, ociref.KindReferrers, "demo/app", 0, ""},
		{"/v2/up.test/Demo/manifests/v1", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2/up.test//app/manifests/v1", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2/up.test/" + strings.Repeat("a", 256) + "/manifests/v1", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2/bad_host:1/app/manifests/v1", "", "", http.StatusBadRequest, ocierr.CodeNameInvalid},
		{"/v2/up.test/manifests/v1", ociref.KindManifests, "up.test", 0, ""},
		{"/", "", "", http.StatusNotFound, ocierr.CodeNameUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rt, e := parseRoute(tt.path)
			if tt.wantStatus != 0 {
				if e == nil || e.Status != tt.wantStatus || e.Code != tt.wantCode {
					t.Fatalf("parseRoute = %+v, %v; want %d %s", rt, e, tt.wantStatus, tt.wantCode)
				}
				return
			}
			if e != nil {
				t.Fatalf("parseRoute: %v", e)
			}
			if rt.kind != tt.wantKind || rt.name != tt.wantName {
				t.Fatalf("parseRoute = %+v; want kind %s name %s", rt, tt.wantKind, tt.wantName)
			}
		})
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{
		"/v2/", "/v2/library/nginx/manifests/latest", "/v2/a/b/blobs/" + testDigest,
		"/v2/x/tags/list", "/v2/x/referrers/" + testDigest, "/v2/../../blobs/sha256:..",
		"/v2/docker.io/library/alpine/manifests/3", "/v2/localhost:5000/a/blobs/" + testDigest,
		"/v2/[::1]:5000/a/tags/list", "/v2/up.test/manifests/v1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		rt, e := parseRoute(path)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" {
				t.Fatalf("bad input got %d %q, want a 4xx with a code", e.Status, e.Code)
			}
			return
		}
		if rt.kind == ociref.KindBase {
			return
		}
		if len(rt.name) > ociref.MaxNameLength || ociref.CheckName(rt.name) != nil || strings.Contains(rt.name, "..") {
			t.Fatalf("accepted invalid name %q", rt.name)
		}
		if rt.host != "" && (!ociref.IsRegistryComponent(rt.first) || rt.host != strings.ToLower(rt.first) ||
			!strings.Contains(path, "/"+rt.first+"/"+rt.name+"/")) {
			t.Fatalf("registry %q (%q) not the first component of %q before name %q", rt.host, rt.first, path, rt.name)
		}
		switch {
		case rt.tag != "":
			if ociref.CheckTag(rt.tag) != nil || strings.ContainsAny(rt.tag, "/:") {
				t.Fatalf("accepted invalid tag %q", rt.tag)
			}
		case rt.kind != ociref.KindTags:
			if rt.digest.Validate() != nil || ociref.Check(rt.digest) != nil || strings.ContainsAny(rt.digest.Encoded(), "/.") {
				t.Fatalf("accepted invalid digest %q", rt.digest)
			}
		}
	})
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		header      string
		size        int64
		wantPartial bool
		wantStart   int64
		wantLen     int64
		wantErr     error
	}{
		{"", 100, false, 0, 0, nil},
		{"bytes=0-", 100, true, 0, 100, nil},
		{"bytes=10-", 100, true, 10, 90, nil},
		{"bytes=99-", 100, true, 99, 1, nil},
		{"bytes=10-19", 100, true, 10, 10, nil},
		{"bytes=10-1000", 100, true, 10, 90, nil},
		{"bytes=-10", 100, true, 90, 10, nil},
		{"bytes=-1000", 100, true, 0, 100, nil},
		{"bytes=0-0,5-6", 100, false, 0, 0, nil},
		{"bytes=100-", 100, false, 0, 0, errRangeUnsatisfiable},
		{"bytes=-0", 100, false, 0, 0, errRangeUnsatisfiable},
		{"bytes=0-", 0, false, 0, 0, errRangeUnsatisfiable},
		{"bytes=20-10", 100, false, 0, 0, errRangeSyntax},
		{"bytes=abc-", 100, false, 0, 0, errRangeSyntax},
		{"bytes=-", 100, false, 0, 0, errRangeSyntax},
		{"bytes=+5-", 100, false, 0, 0, errRangeSyntax},
		{"bytes=99999999999999999999-", 100, false, 0, 0, errRangeSyntax},
		{"items=0-5", 100, false, 0, 0, errRangeSyntax},
		{"bytes=5", 100, false, 0, 0, errRangeSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			r, partial, err := parseRange(tt.header, tt.size)
			if err != tt.wantErr || partial != tt.wantPartial || r.start != tt.wantStart || r.length != tt.wantLen {
				t.Fatalf("parseRange = %+v, %v, %v; want start %d len %d partial %v err %v",
					r, partial, err, tt.wantStart, tt.wantLen, tt.wantPartial, tt.wantErr)
			}
		})
	}
}

func FuzzParseRange(f *testing.F) {
	f.Add("bytes=0-", int64(10))
	f.Add("bytes=-5", int64(10))
	f.Add("bytes=3-7", int64(10))
	f.Add("bytes=1-2,4-5", int64(10))
	f.Fuzz(func(t *testing.T, header string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 { // math.MinInt64
			return
		}
		r, partial, err := parseRange(header, size)
		if err != nil || !partial {
			return
		}
		if r.start < 0 || r.length < 1 || r.start+r.length > size {
			t.Fatalf("parseRange(%q, %d) = %+v: outside the representation", header, size, r)
		}
	})
}
