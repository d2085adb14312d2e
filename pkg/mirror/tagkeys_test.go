package mirror

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestJunkAcceptKeepsTagRecordsBounded: tag records are keyed by the
// manifest media types a client accepts, not by its Accept header as
// sent, so clients varying the rest of the header share records, and
// what the records hold does not grow with the header.
func TestJunkAcceptKeepsTagRecordsBounded(t *testing.T) {
	e := newEnv(t, nil)
	img := e.up.PushImage(t, "test/app", "v1", 100)
	const requests = 2000
	junk := strings.Repeat("x", 4<<10)
	for i := range requests {
		accept := fmt.Sprintf("application/x-junk-%d-%s, %s;q=0.%d, %s", i, junk, ocispec.MediaTypeImageIndex, i%10, ocispec.MediaTypeImageManifest)
		resp, body := e.do(http.MethodGet, e.url("/v2/test/app/manifests/v1"), http.Header{"Accept": {accept}})
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Blobs[img.Index]) {
			t.Fatalf("request %d: status %d, not the index", i, resp.StatusCode)
		}
	}
	if n := e.mirror.tags.Len(); n > 2 {
		t.Fatalf("%d tag records after %d requests differing only in unknown Accept types, want at most 2", n, requests)
	}
	// Only unknown types: a set of its own, answered as upstream answers
	// a request without Accept, never from the store as for a client that
	// sent no Accept (which accepts anything).
	gets := e.up.ManifestRequests(http.MethodGet)
	resp, _ := e.do(http.MethodGet, e.url("/v2/test/app/manifests/v1"), http.Header{"Accept": {"application/x-junk"}})
	if resp.StatusCode == http.StatusOK && e.up.ManifestRequests(http.MethodGet) == gets {
		t.Fatal("a client accepting no manifest type was served the stored index")
	}
	if n := e.mirror.tags.Len(); n > 3 {
		t.Fatalf("%d tag records, want at most 3", n)
	}
}

// TestTagRecordsAreCapped: however many tags are asked for, the records
// stay within maxTagRecords, and each record's size is bounded.
func TestTagRecordsAreCapped(t *testing.T) {
	e := newEnv(t, nil)
	for i := range maxTagRecords + 100 {
		e.mirror.tags.Set(fmt.Sprintf("r/n:t%d|", i), tagRecord{digest: digest.FromString(fmt.Sprint(i))})
	}
	if n := e.mirror.tags.Len(); n > maxTagRecords {
		t.Fatalf("%d tag records, want at most %d", n, maxTagRecords)
	}
	if n := e.mirror.tags.Len(); n < maxTagRecords {
		t.Fatalf("%d tag records, want the bound %d kept", n, maxTagRecords)
	}
}

func TestParseAcceptKeepsManifestTypes(t *testing.T) {
	tests := []struct {
		header []string
		want   []string
	}{
		{nil, nil},
		{[]string{""}, nil},
		{[]string{ocispec.MediaTypeImageManifest + ";q=0.5, text/html, " + ocispec.MediaTypeImageIndex},
			[]string{ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest}},
		{[]string{"APPLICATION/VND.OCI.IMAGE.MANIFEST.V1+JSON", "*/*"}, []string{"*/*", ocispec.MediaTypeImageManifest}},
		{[]string{"application/*, text/*"}, []string{"application/*"}},
		{[]string{"text/plain, application/x-junk"}, []string{acceptNoManifest}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.header, "|"), func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.header {
				h.Add("Accept", v)
			}
			got := parseAccept(h)
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("parseAccept = %q, want %q", got, tt.want)
			}
		})
	}
}
