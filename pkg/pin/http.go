package pin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxManifestSize bounds a manifest read into memory: the mirror's own
// bound (4 MiB, as containerd's), so anything it serves fits.
const maxManifestSize = 4 << 20

// maxErrorBody bounds the error body read for its message: an OCI error
// is a few hundred bytes, and one that is not stops being read here.
const maxErrorBody = 64 << 10

// pullBufferSize is Pull's read buffer, the mirror's own fill buffer:
// few reads for a large layer, little memory for a small one.
const pullBufferSize = 256 << 10

// manifestAccept is every manifest media type Walk reads, for Accept.
var manifestAccept = strings.Join([]string{
	ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// ErrFetch is the error of a manifest or blob the mirror did not give.
var ErrFetch = errors.New("fetch failed")

// HTTPSource fetches through a nodecache mirror over HTTP, naming the
// registry with ?ns=, as containerd does.
type HTTPSource struct {
	client *http.Client
	base   string // scheme://host, no trailing slash
}

// NewHTTPSource returns a source for the mirror at addr: a URL
// (http://127.0.0.1:5050), host:port, or unix:///path/to.sock.
func NewHTTPSource(addr string) (*HTTPSource, error) {
	client, base, err := NewClient(addr)
	if err != nil {
		return nil, err
	}
	return &HTTPSource{client: client, base: base}, nil
}

// NewClient returns an HTTP client and base URL for a nodecache listener
// at addr: a URL, host:port, or unix:///path (a unix socket).
func NewClient(addr string) (*http.Client, string, error) {
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		if path == "" || path[0] != '/' {
			return nil, "", fmt.Errorf("%q: a unix socket path must be absolute", addr)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		return &http.Client{Transport: tr}, "http://nodecache", nil
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, "", fmt.Errorf("%q: want http://host:port, host:port or unix:///path", addr)
	}
	return &http.Client{}, u.Scheme + "://" + u.Host, nil
}

func (s *HTTPSource) url(ref Ref, kind, reference string) string {
	return s.base + "/v2/" + ref.Repository + "/" + kind + "/" + reference + "?ns=" + url.QueryEscape(ref.Registry)
}

func (s *HTTPSource) get(ctx context.Context, ref Ref, kind, reference string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url(ref, kind, reference), nil)
	if err != nil {
		return nil, err
	}
	if kind == "manifests" {
		req.Header.Set("Accept", manifestAccept)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s %s of %s: %w", ErrFetch, kind, reference, ref, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, fmt.Errorf("%w: %s %s of %s: %s%s", ErrFetch, kind, reference, ref, resp.Status, errorMessage(resp.Body))
	}
	return resp, nil
}

// errorMessage is the first message of an OCI error body, if any.
func errorMessage(r io.Reader) string {
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.NewDecoder(io.LimitReader(r, maxErrorBody)).Decode(&e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return ": " + e.Errors[0].Code + " " + e.Errors[0].Message
}

// Manifest fetches a manifest by tag or digest.
func (s *HTTPSource) Manifest(ctx context.Context, ref Ref, reference string) (Manifest, error) {
	resp, err := s.get(ctx, ref, "manifests", reference)
	if err != nil {
		return Manifest{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("%w: manifest %s of %s: %w", ErrFetch, reference, ref, err)
	}
	if len(b) > maxManifestSize {
		return Manifest{}, fmt.Errorf("%w: manifest %s of %s is larger than %d bytes", ErrImage, reference, ref, maxManifestSize)
	}
	m := Manifest{MediaType: strings.TrimSpace(strings.Split(resp.Header.Get("Content-Type"), ";")[0]), Body: b}
	if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		m.Digest = d
	}
	return m, nil
}

// Pull reads the blob desc of ref through the mirror to its end, checking
// its size and digest, and reports each chunk read to progress (which may
// be nil). Reading it to the end is what makes the mirror keep it.
func (s *HTTPSource) Pull(ctx context.Context, ref Ref, desc ocispec.Descriptor, progress func(n int64)) error {
	resp, err := s.get(ctx, ref, "blobs", desc.Digest.String())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if !desc.Digest.Algorithm().Available() {
		return fmt.Errorf("%w: blob %s: unsupported digest algorithm", ErrFetch, desc.Digest)
	}
	v := desc.Digest.Verifier()
	buf := make([]byte, pullBufferSize)
	var n int64
	for {
		k, rerr := resp.Body.Read(buf)
		if k > 0 {
			v.Write(buf[:k])
			n += int64(k)
			if progress != nil {
				progress(int64(k))
			}
			if n > desc.Size {
				return fmt.Errorf("%w: blob %s of %s is larger than its %d bytes", ErrFetch, desc.Digest, ref, desc.Size)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: blob %s of %s: %w", ErrFetch, desc.Digest, ref, rerr)
		}
	}
	if n != desc.Size || !v.Verified() {
		return fmt.Errorf("%w: blob %s of %s does not match its digest and size", ErrFetch, desc.Digest, ref)
	}
	return nil
}
