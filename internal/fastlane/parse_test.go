package fastlane

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"reflect"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// heads are request heads, each with whether the loop takes it.
var heads = []struct {
	name string
	head string
	take bool
}{
	{"containerd by tag", "GET /v2/library/alpine/manifests/3.20?ns=docker.io HTTP/1.1\r\nHost: 127.0.0.1:5050\r\nUser-Agent: containerd/v2.1.0\r\nAccept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, */*\r\nAccept-Encoding: gzip\r\n\r\n", true},
	{"wrk by digest", "GET /v2/bench/app/manifests/sha256:555b2d8c647c2198aac674361f385e9b5f2d8c2f7c157cd2e69c0d5f1adcb8f3 HTTP/1.1\r\nHost: 127.0.0.21:5050\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n", true},
	{"HEAD, close", "HEAD /v2/a/manifests/v1 HTTP/1.1\r\nhost: x\r\nconnection: Close\r\n\r\n", true},
	{"keep-alive, odd names", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nx-trace-ID:\t a b \t\r\nX-Trace-Id: 2\r\n\r\n", true},
	{"authorization", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: [::1]:5050\r\nAuthorization: Basic dTpw\r\n\r\n", true},
	{"POST", "POST /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", false},
	{"HTTP/1.0", "GET /v2/a/manifests/v1 HTTP/1.0\r\nHost: x\r\n\r\n", false},
	{"bare LF", "GET /v2/a/manifests/v1 HTTP/1.1\nHost: x\n\n", false},
	{"folded line", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nAccept: a,\r\n b\r\n\r\n", false},
	{"two Hosts", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", false},
	{"no Host", "GET /v2/a/manifests/v1 HTTP/1.1\r\nAccept: */*\r\n\r\n", false},
	{"empty Host", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost:\r\n\r\n", false},
	{"bad Host", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: a b\r\n\r\n", false},
	{"Content-Length", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false},
	{"Transfer-Encoding", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", false},
	{"Expect", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false},
	{"Upgrade", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n", false},
	{"Pragma", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\n\r\n", false},
	{"other Connection", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n", false},
	{"absolute form", "GET http://x/v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", false},
	{"escaped path", "GET /v2/a%2Fb/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", false},
	{"lone question mark", "GET /v2/a/manifests/v1? HTTP/1.1\r\nHost: x\r\n\r\n", false},
	{"fragment", "GET /v2/a/manifests/v1?ns=x#y HTTP/1.1\r\nHost: x\r\n\r\n", false},
	{"space before colon", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost : x\r\n\r\n", false},
	{"non-ASCII value", "GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nAccept: \xff\r\n\r\n", false},
	{"two spaces", "GET  /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\n\r\n", false},
}

func TestParseHead(t *testing.T) {
	for _, tc := range heads {
		t.Run(tc.name, func(t *testing.T) {
			head := []byte(tc.head)
			if n := headEnd(head); n != len(head) {
				t.Fatalf("headEnd = %d, want %d", n, len(head))
			}
			r := parseHead(context.Background(), head)
			if got := r != nil; got != tc.take {
				t.Fatalf("taken = %v, want %v", got, tc.take)
			}
			if r != nil {
				sameAsNetHTTP(t, head, r)
			}
		})
	}
}

func TestParseHeadFields(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, 1)
	r := parseHead(ctx, []byte("HEAD /v2/a/manifests/v1?ns=docker.io HTTP/1.1\r\nHost: h:1\r\nConnection: close\r\naccept: a\r\nAccept: b\r\n\r\n"))
	if r == nil {
		t.Fatal("not taken")
	}
	if r.Method != http.MethodHead || r.URL.Path != "/v2/a/manifests/v1" || r.URL.RawQuery != "ns=docker.io" ||
		r.Host != "h:1" || !r.Close || r.Header["Host"] != nil || !reflect.DeepEqual(r.Header["Accept"], []string{"a", "b"}) ||
		r.Context().Value(key{}) != 1 || r.Body != http.NoBody {
		t.Fatalf("request %+v", r)
	}
}

// sameAsNetHTTP fails t unless got is the request net/http's server
// reads from head: http.ReadRequest (which takes Host out of the header
// map), then the server's own checks (a valid Host, valid names and
// values).
func sameAsNetHTTP(t *testing.T, head []byte, got *http.Request) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(head))
	want, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("taken, but http.ReadRequest: %v", err)
	}
	if br.Buffered() != 0 {
		t.Fatalf("taken, but http.ReadRequest left %d bytes", br.Buffered())
	}
	// ReadRequest moved the one Host allowed to want.Host (an origin-form
	// target has none of its own).
	if want.Host == "" || !httpguts.ValidHostHeader(want.Host) {
		t.Fatalf("taken, but net/http's server refuses Host %q", want.Host)
	}
	for k, vs := range want.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			t.Fatalf("taken, but net/http's server refuses name %q", k)
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				t.Fatalf("taken, but net/http's server refuses value %q", v)
			}
		}
	}
	if got.Method != want.Method || got.RequestURI != want.RequestURI || got.Proto != want.Proto ||
		got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor || got.Host != want.Host ||
		got.Close != want.Close || got.ContentLength != want.ContentLength || got.TransferEncoding != nil ||
		want.TransferEncoding != nil || want.Body != http.NoBody {
		t.Fatalf("request line or framing differs:\n got %+v\nwant %+v", got, want)
	}
	if !reflect.DeepEqual(*got.URL, *want.URL) {
		t.Fatalf("URL differs:\n got %#v\nwant %#v", *got.URL, *want.URL)
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Fatalf("header differs:\n got %q\nwant %q", got.Header, want.Header)
	}
}

// FuzzParseHead checks every head the loop takes against net/http's own
// reading of it: the loop must never read a request differently from
// the server it hands the others to.
func FuzzParseHead(f *testing.F) {
	for _, tc := range heads {
		f.Add([]byte(tc.head))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n := headEnd(data)
		if n == 0 {
			return
		}
		head := data[:n]
		if r := parseHead(context.Background(), head); r != nil {
			sameAsNetHTTP(t, head, r)
		}
	})
}
