package mirror

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// FuzzHandler sends any method, path, query, Range and Accept to the whole
// pull-path handler, in front of a healthy upstream holding one image, and
// checks that no request panics or gets a 5xx: with nothing wrong upstream,
// every answer to a bad request is the client's fault (4xx).
func FuzzHandler(f *testing.F) {
	up := registrytest.Start(f)
	img := up.PushImage(f, "app", "v1", 3000, 70_000)
	store, err := diskstore.Open(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	client, err := upstream.New(map[string]string{up.Host(): up.URL()})
	if err != nil {
		f.Fatal(err)
	}
	m := New(store, client, WithAllowList([]string{up.Host()}), WithDefaultRegistry(up.Host()))
	f.Cleanup(m.Close)

	layer := img.Layers["linux/amd64"][1].String()
	for _, s := range fuzzSeeds(up.Host(), img.Index.String(), img.Manifests["linux/amd64"].String(), layer) {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	f.Fuzz(func(t *testing.T, method, path, query, rangeH, accept string) {
		req := fuzzRequest(t.Context(), method, path, query, rangeH, accept)
		if req == nil {
			t.Skip("net/http would refuse this request before the handler")
		}
		rec := httptest.NewRecorder()
		m.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Errorf("%s %s?%s Range %q Accept %q: %d %s", method, path, query, rangeH, accept, rec.Code, rec.Body.Bytes())
		}
	})
}

// fuzzRequest builds the request a real server would hand the handler, or
// nil if net/http would answer it itself (a bad method token, a request
// target that does not parse, a header value with control characters).
func fuzzRequest(ctx context.Context, method, path, query, rangeH, accept string) *http.Request {
	if method == "" || strings.IndexFunc(method, notTokenRune) >= 0 || !validHeaderValue(rangeH) || !validHeaderValue(accept) {
		return nil
	}
	target := path
	if query != "" {
		target += "?" + query
	}
	if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \x00\r\n\t") {
		return nil
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1:5050"+target, nil)
	if err != nil {
		return nil
	}
	req.URL, req.RequestURI = u, target
	if rangeH != "" {
		req.Header.Set("Range", rangeH)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	return req
}

// notTokenRune reports a rune that may not appear in an HTTP method.
func notTokenRune(r rune) bool {
	return r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r)
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// fuzzSeeds are interesting requests: hits and misses of every route kind,
// every shape of Range, Accept lists, and malformed names, digests,
// methods and queries. Each is method, path, query, Range, Accept.
func fuzzSeeds(host, index, manifest, layer string) [][5]string {
	const oci = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
	ns := "ns=" + host
	zero := "sha256:" + strings.Repeat("0", 64)
	return [][5]string{
		{"GET", "/v2/", "", "", ""},
		{"GET", "/v2", "", "", ""},
		{"HEAD", "/v2/", ns, "", ""},
		{"GET", "/v2/app/manifests/v1", ns, "", oci},
		{"HEAD", "/v2/app/manifests/v1", ns, "", oci},
		{"GET", "/v2/app/manifests/v1", ns, "", "*/*"},
		{"GET", "/v2/app/manifests/v1", ns, "", "application/vnd.docker.distribution.manifest.v2+json;q=0.5, text/html"},
		{"GET", "/v2/app/manifests/v1", ns, "", strings.Repeat("application/x,", 200)},
		{"GET", "/v2/app/manifests/" + index, ns, "", oci},
		{"GET", "/v2/app/manifests/" + manifest, "", "bytes=0-10", oci},
		{"GET", "/v2/app/manifests/" + zero, ns, "", oci},
		{"GET", "/v2/app/manifests/nosuchtag", ns, "", oci},
		{"GET", "/v2/app/manifests/.INVALID_MANIFEST_NAME", ns, "", oci},
		{"GET", "/v2/app/manifests/sha256:abc", ns, "", ""},
		{"GET", "/v2/app/manifests/sha512:" + strings.Repeat("a", 128), ns, "", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "", ""},
		{"HEAD", "/v2/app/blobs/" + layer, ns, "", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "bytes=0-99", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "bytes=100-", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "bytes=-100", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "bytes=5-1", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "bytes=0-0,2-3", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "bytes=99999999-", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "bytes=-0", ""},
		{"GET", "/v2/app/blobs/" + layer, ns, "items=0-1", ""},
		{"HEAD", "/v2/app/blobs/" + layer, ns, "bytes=0-99", ""},
		{"GET", "/v2/app/blobs/" + zero, ns, "", ""},
		{"GET", "/v2/app/blobs/" + zero, ns, "bytes=0-1", ""},
		{"GET", "/v2/app/blobs/sha256:XYZ", ns, "", ""},
		{"GET", "/v2/app/blobs/md5:abc", ns, "", ""},
		{"GET", "/v2/app/blobs/uploads/", ns, "", ""},
		{"POST", "/v2/app/blobs/uploads/", ns, "", ""},
		{"PUT", "/v2/app/manifests/v1", ns, "", ""},
		{"DELETE", "/v2/app/blobs/" + layer, ns, "", ""},
		{"OPTIONS", "/v2/", "", "", ""},
		{"PATCH", "/v2/app/blobs/uploads/x", "", "", ""},
		{"BREW", "/v2/app/manifests/v1", "", "", ""},
		{"GET", "/v2/app/tags/list", ns, "", ""},
		{"GET", "/v2/app/tags/list", ns + "&n=1&last=a", "", ""},
		{"GET", "/v2/nosuch/tags/list", ns, "", ""},
		{"GET", "/v2/app/referrers/" + manifest, ns, "", ""},
		{"GET", "/v2/app/referrers/" + manifest, ns + "&artifactType=x", "", ""},
		{"GET", "/v2/_catalog", "", "", ""},
		{"GET", "/v2/app/manifests/v1", "ns=evil.example", "", oci},
		{"GET", "/v2/app/manifests/v1", "ns=", "", oci},
		{"GET", "/v2/app/manifests/v1", "ns=" + host + "&ns=other", "", oci},
		{"GET", "/v2/app/manifests/v1", "ns=%zz", "", oci},
		{"GET", "/v2/library/../../etc/passwd/manifests/v1", "", "", ""},
		{"GET", "/v2/app%2Fx/manifests/v1", "", "", ""},
		{"GET", "//v2/app/manifests/v1", "", "", ""},
		{"GET", "/v2/UPPER/manifests/v1", "", "", ""},
		{"GET", "/v2/" + strings.Repeat("a/", 200) + "manifests/v1", "", "", ""},
		{"GET", "/v2/a/manifests/" + strings.Repeat("t", 200), "", "", ""},
		{"GET", "/v2/app/blobs/", "", "", ""},
		{"GET", "/v2/app/manifests/", "", "", ""},
		{"GET", "/metrics", "", "", ""},
		// The registry in the path: allowed, with ns agreeing or not, not
		// allowed, and a namespace that only looks like one.
		{"GET", "/v2/" + host + "/app/manifests/v1", "", "", oci},
		{"HEAD", "/v2/" + host + "/app/blobs/" + layer, ns, "", ""},
		{"GET", "/v2/" + host + "/app/blobs/" + layer, "ns=other.test", "bytes=0-9", ""},
		{"GET", "/v2/" + host + "/app/tags/list", "", "", ""},
		{"GET", "/v2/" + host + "/app/referrers/" + manifest, "", "", ""},
		{"GET", "/v2/evil.example/app/manifests/v1", "", "", oci},
		{"GET", "/v2/evil.example:5000/app/manifests/v1", ns, "", oci},
		{"GET", "/v2/my.team/app/manifests/v1", ns, "", oci},
		{"GET", "/v2/localhost/app/manifests/v1", "", "", oci},
		{"GET", "/v2/[::1]:5000/app/manifests/v1", "", "", oci},
		{"GET", "/v2/" + strings.ToUpper(host) + "/app/manifests/v1", "", "", oci},
		{"GET", "/v2/" + host + "/manifests/v1", "", "", oci},
		{"GET", "/", "", "", ""},
	}
}
