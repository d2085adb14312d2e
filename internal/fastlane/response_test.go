package fastlane

import (
	"bufio"
	"bytes"
	"net/http"
	"testing"
)

// FuzzWriteHeader checks writeHeader against http.Header.Write, which it
// stands in for: the same bytes for any header.
func FuzzWriteHeader(f *testing.F) {
	f.Add("Content-Type", "application/vnd.oci.image.manifest.v1+json", "Docker-Content-Digest", "sha256:0a")
	f.Add("Etag", `"sha256:0a"`, "Bad Name", "x")
	f.Add("Warning", "110 nodecache \"Response is Stale\"", "Content-Type", "a\r\nb")
	f.Add("X", " padded ", "X", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		h := http.Header{}
		h[k1] = append(h[k1], v1)
		h[k2] = append(h[k2], v2)
		h["Date"] = []string{"Wed, 02 Dec 2026 15:00:00 GMT"}
		var got, want bytes.Buffer
		bw := bufio.NewWriter(&got)
		if err := writeHeader(bw, h); err != nil {
			t.Fatal(err)
		}
		bw.Flush()
		if err := h.Write(&want); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("writeHeader wrote\n%q\nHeader.Write\n%q", got.Bytes(), want.Bytes())
		}
	})
}
