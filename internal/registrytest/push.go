package registrytest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/opencontainers/go-digest"
)

// ErrPush is wrapped by every push failure.
var ErrPush = errors.New("registrytest: push failed")

// PushBlob uploads data to repo monolithically (POST, then PUT ?digest=)
// and returns its digest.
//
// Pushes go through the registry's HTTP API but in-process, bypassing the
// middleware and the network: they are not counted, throttled or faulted.
// On an authenticated registry they authenticate as an internal admin user
// through the registry's own access controller.
// The body is handed over as an io.WriterTo, so distribution stores it with
// one Write; its inmemory driver copies each Write into a buffer grown to
// the exact new size, so the 32 KiB writes of a network upload cost time
// quadratic in the blob size.
func (r *Registry) PushBlob(tb testing.TB, repo string, data []byte) digest.Digest {
	tb.Helper()
	d := digest.FromBytes(data)
	if err := r.pushBlob(tb.Context(), repo, d, data); err != nil {
		tb.Fatal(err)
	}
	return d
}

// PushManifest puts body as the manifest ref (a tag or a digest) of repo
// with the given media type and returns its digest. Every blob and child
// manifest it references must already be pushed.
func (r *Registry) PushManifest(tb testing.TB, repo, ref, mediaType string, body []byte) digest.Digest {
	tb.Helper()
	d, err := r.pushManifest(tb.Context(), repo, ref, mediaType, body)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func (r *Registry) pushBlob(ctx context.Context, repo string, d digest.Digest, data []byte) error {
	resp, err := r.local(ctx, repo, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return statusError("start upload", repo, resp)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("%w: upload location: %w", ErrPush, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	resp, err = r.local(ctx, repo, http.MethodPut, loc.RequestURI(), "application/octet-stream", data)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return statusError("upload blob "+d.String(), repo, resp)
	}
	return nil
}

func (r *Registry) pushManifest(ctx context.Context, repo, ref, mediaType string, body []byte) (digest.Digest, error) {
	resp, err := r.local(ctx, repo, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, mediaType, body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusCreated {
		return "", statusError("put manifest "+ref, repo, resp)
	}
	return digest.FromBytes(body), nil
}

// local serves one request with the distribution app in-process, as the
// admin user when the registry authenticates (repo names the repository
// the admin's token is for). The body is a bytes.Reader, which
// distribution's io.Copy uses as an io.WriterTo.
func (r *Registry) local(ctx context.Context, repo, method, target, contentType string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, r.srv.URL+target, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPush, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if r.pushAuth != nil {
		req.Header.Set("Authorization", r.pushAuth(repo))
	}
	rec := httptest.NewRecorder()
	r.app.ServeHTTP(rec, req)
	return rec.Result(), nil
}

func statusError(op, repo string, resp *http.Response) error {
	msg, _ := io.ReadAll(resp.Body)
	return fmt.Errorf("%w: %s in %s: %s: %s", ErrPush, op, repo, resp.Status, bytes.TrimSpace(msg))
}
