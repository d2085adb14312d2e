package registrytest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
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

// blobFixture starts a registry with one 1 MiB blob and returns its path.
func blobFixture(t *testing.T, opts ...Option) (*Registry, []byte, string) {
	t.Helper()
	reg := Start(t, opts...)
	data := Random(7, 1<<20)
	d := reg.PushBlob(t, "app", data)
	return reg, data, "/v2/app/blobs/" + d.String()
}

func TestFaultsPerPathAndMethod(t *testing.T) {
	reg, data, layer := blobFixture(t)
	reg.SetFault(Faults(
		FailWith(http.StatusBadGateway, Path(http.MethodHead, layer)),
		FailWith(http.StatusInternalServerError, Path(http.MethodGet, "/v2/app/blobs/sha256:"+strings.Repeat("0", 64))),
	))
	get(t, reg, http.MethodHead, layer, http.StatusBadGateway)
	if body := get(t, reg, http.MethodGet, layer, http.StatusOK); !bytes.Equal(body, data) {
		t.Error("GET of the HEAD-faulted path did not pass whole")
	}
	get(t, reg, http.MethodGet, "/v2/app/blobs/sha256:"+strings.Repeat("0", 64), http.StatusInternalServerError)
}

func TestFault5xx(t *testing.T) {
	for _, code := range []int{500, 502, 503, 504} {
		reg, _, layer := blobFixture(t, WithFault(FailWith(code, nil)))
		body := get(t, reg, http.MethodGet, layer, code)
		if !bytes.Contains(body, []byte(`"UNAVAILABLE"`)) {
			t.Errorf("%d: body %q, want an OCI error", code, body)
		}
	}
}

func TestFaultTooManyRequests(t *testing.T) {
	reg, _, layer := blobFixture(t, WithFault(TooManyRequests("7", Route("", KindBlobs))))
	resp := open(t, t.Context(), reg, http.MethodGet, layer, http.StatusTooManyRequests)
	defer resp.Body.Close()
	if got := resp.Header.Get("Retry-After"); got != "7" {
		t.Errorf("Retry-After = %q, want 7", got)
	}
	body, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(body, []byte(`"TOOMANYREQUESTS"`)) {
		t.Errorf("body %q, want TOOMANYREQUESTS", body)
	}
}

func TestFaultRedirect(t *testing.T) {
	reg, _, layer := blobFixture(t)
	other := Random(8, 1000)
	target := reg.URL() + "/v2/app/blobs/" + reg.PushBlob(t, "app", other).String()
	reg.SetFault(Redirect(target, Path(http.MethodGet, layer)))

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(reg.URL() + layer)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != target {
		t.Errorf("got %s to %q, want 307 to %q", resp.Status, resp.Header.Get("Location"), target)
	}
	if body := get(t, reg, http.MethodGet, layer, http.StatusOK); !bytes.Equal(body, other) {
		t.Error("following the redirect did not reach the target")
	}
}

func TestFaultReset(t *testing.T) {
	reg, _, layer := blobFixture(t)
	reg.SetFault(reg.ResetAfter(100_000, Route(http.MethodGet, KindBlobs)))
	resp := open(t, t.Context(), reg, http.MethodGet, layer, http.StatusOK)
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if !errors.Is(err, syscall.ECONNRESET) || n > 100_000 {
		t.Errorf("read %d bytes, %v; want at most 100000 and a connection reset", n, err)
	}
}

func TestFaultWrongLength(t *testing.T) {
	reg, data, layer := blobFixture(t)

	reg.SetFault(reg.WrongLength(+10, nil))
	resp := open(t, t.Context(), reg, http.MethodGet, layer, http.StatusOK)
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ContentLength != 1<<20+10 || n != 1<<20 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("longer: Content-Length %d, read %d, %v; want %d, %d and unexpected EOF", resp.ContentLength, n, err, 1<<20+10, 1<<20)
	}
	head := open(t, t.Context(), reg, http.MethodHead, layer, http.StatusOK)
	head.Body.Close()
	if head.ContentLength != 1<<20+10 {
		t.Errorf("HEAD Content-Length %d, want %d", head.ContentLength, 1<<20+10)
	}

	reg.SetFault(reg.WrongLength(-10, nil))
	body := get(t, reg, http.MethodGet, layer, http.StatusOK)
	if len(body) != 1<<20-10 || !bytes.Equal(body, data[:len(body)]) {
		t.Errorf("shorter: got %d bytes, want the first %d", len(body), 1<<20-10)
	}
}

func TestFaultWrongBytes(t *testing.T) {
	reg, data, layer := blobFixture(t, WithFault(nil))
	reg.SetFault(reg.WrongBytes(500_000, Route(http.MethodGet, KindBlobs)))
	body := get(t, reg, http.MethodGet, layer, http.StatusOK)
	if len(body) != len(data) {
		t.Fatalf("got %d bytes, want %d", len(body), len(data))
	}
	for i := range body {
		if want := body[i] != data[i]; want != (i == 500_000) {
			t.Fatalf("byte %d: got %#x, real %#x; want only byte 500000 changed", i, body[i], data[i])
		}
	}
}

func TestFaultStall(t *testing.T) {
	reg, data, layer := blobFixture(t)
	gate := NewGate()
	reg.SetFault(reg.Stall(300_000, gate, Route(http.MethodGet, KindBlobs)))

	// Released: the first bytes come, then the rest after the release.
	resp := open(t, t.Context(), reg, http.MethodGet, layer, http.StatusOK)
	defer resp.Body.Close()
	first := make([]byte, 300_000)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if err := gate.WaitHeld(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	gate.Release()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(first, rest...), data) {
		t.Fatalf("after release: %d more bytes, %v; want the whole blob", len(rest), err)
	}

	// Never released: the hold ends with the request.
	gate = NewGate()
	reg.SetFault(reg.Stall(300_000, gate, Route(http.MethodGet, KindBlobs)))
	ctx, cancel := context.WithCancel(t.Context())
	resp2 := open(t, ctx, reg, http.MethodGet, layer, http.StatusOK)
	defer resp2.Body.Close()
	if _, err := io.ReadFull(resp2.Body, first); err != nil {
		t.Fatal(err)
	}
	if err := gate.WaitHeld(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := gate.WaitHeld(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
}

func TestFaultNoHeaders(t *testing.T) {
	reg, data, layer := blobFixture(t)
	gate := NewGate()
	reg.SetFault(reg.NoHeaders(gate, nil))

	got := make(chan []byte, 1)
	go func() {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.URL()+layer, nil)
		resp, err := reg.Client().Do(req)
		if err != nil {
			got <- nil
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- b
	}()
	if err := gate.WaitHeld(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
		t.Fatal("an answer came before the release")
	default:
	}
	gate.Release()
	if b := <-got; !bytes.Equal(b, data) {
		t.Errorf("after release got %d bytes, want the blob", len(b))
	}

	// Never released: the client gives up and the hold ends.
	gate = NewGate()
	reg.SetFault(reg.NoHeaders(gate, nil))
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, reg.URL()+layer, nil)
		resp, err := reg.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	if err := gate.WaitHeld(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want the client's cancellation", err)
	}
	if err := gate.WaitHeld(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
}

func TestFaultEndless(t *testing.T) {
	reg, _, layer := blobFixture(t, WithFault(Endless(Route("", KindBlobs))))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp := open(t, ctx, reg, http.MethodGet, layer, http.StatusOK)
	defer resp.Body.Close()
	if resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("Content-Length %d, Transfer-Encoding %v; want none and chunked", resp.ContentLength, resp.TransferEncoding)
	}
	const far = 8 << 20 // well past the blob's real size
	if n, err := io.CopyN(io.Discard, resp.Body, far); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	cancel()
	if _, err := io.Copy(io.Discard, resp.Body); !errors.Is(err, context.Canceled) {
		t.Errorf("after the client left: %v, want its cancellation", err)
	}
	// HEAD is not faulted: it reaches the registry.
	get(t, reg, http.MethodHead, layer, http.StatusOK)
	// The registry counts a write once it returns, which can be after the
	// client has read its bytes: Close waits for the handler to return.
	reg.Close()
	if sent := reg.BytesSent(); sent < far {
		t.Errorf("registry counted %d bytes sent, want at least %d", sent, far)
	}
}
