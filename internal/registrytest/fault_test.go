package registrytest

import (
	"errors"
	"io"
	"net/http"
	"testing"
)

func TestFaults(t *testing.T) {
	reg := Start(t, WithFault(FailWith(http.StatusServiceUnavailable, Route(http.MethodGet, KindBlobs))))
	img := reg.PushSingleImage(t, "app", "v1", 1<<20)
	layer := "/v2/app/blobs/" + img.Layers["linux/amd64"][0].String()

	get(t, reg, http.MethodGet, layer, http.StatusServiceUnavailable)
	get(t, reg, http.MethodHead, layer, http.StatusOK)
	get(t, reg, http.MethodGet, "/v2/app/manifests/v1", http.StatusOK)
	if n := reg.BlobGets(img.Layers["linux/amd64"][0]); n != 1 {
		t.Errorf("faulted request counted %d times, want 1", n)
	}

	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusTooManyRequests)
		return true
	})
	get(t, reg, http.MethodGet, "/v2/app/manifests/v1", http.StatusTooManyRequests)

	reg.SetFault(nil)
	if body := get(t, reg, http.MethodGet, layer, http.StatusOK); len(body) != 1<<20 {
		t.Errorf("got %d bytes after removing the fault", len(body))
	}
}

func TestCutAfter(t *testing.T) {
	reg := Start(t)
	d := reg.PushBlob(t, "app", Random(1, 1<<20))
	reg.SetFault(reg.CutAfter(100_000, Route(http.MethodGet, KindBlobs)))

	resp := open(t, t.Context(), reg, http.MethodGet, "/v2/app/blobs/"+d.String(), http.StatusOK)
	defer resp.Body.Close()
	if resp.ContentLength != 1<<20 {
		t.Errorf("Content-Length = %d, want the real one", resp.ContentLength)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != 100_000 {
		t.Errorf("read %d bytes, %v; want 100000 and unexpected EOF", n, err)
	}
}
