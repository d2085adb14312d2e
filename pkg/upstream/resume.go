package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"nodecache/internal/blobio"
	"nodecache/internal/ociref"
)

// maxResumes bounds how often one blob body is resumed. A transfer that
// breaks more often than this is not going to finish; failing lets the
// caller's fill fail and a later request start afresh.
const maxResumes = 5

// ErrResume means a broken blob transfer could not be resumed: the budget
// was spent, or the registry's answer to the Range request did not
// continue the same bytes. It is blobio's, which does the resuming.
var ErrResume = blobio.ErrResume

// resumable reports whether resp's body is blob bytes whose transfer can
// be resumed with a Range request: a whole blob (a 200 to a GET without
// Range), or a blob's tail (the answer to "Range: bytes=N-"). Any other
// Range is the caller's own and passes through untouched.
func resumable(r Request, resp *Response) bool {
	if r.Method != http.MethodGet || r.Kind != ociref.KindBlobs {
		return false
	}
	if r.Header.Get("Range") == "" {
		return resp.StatusCode == http.StatusOK
	}
	_, ok := blobio.ParseRangeFrom(r.Header.Get("Range"))
	return ok && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent)
}

// resumeBody makes resp's body resume from the same endpoint, with the
// same credentials, when it breaks (blobio.Resumer). For a tail ("Range:
// bytes=N-") the answer is checked to start at N, and a 200 (a registry
// that ignores Range) is turned into the 206 that was asked for, so
// callers always get the blob from N on, or an error wrapping ErrResume.
func (c *Client) resumeBody(ctx context.Context, r Request, ep endpoint, cr creds, resp *Response) error {
	src := &endpointSource{c: c, r: r, ep: ep, cr: cr, size: resp.ContentLength}
	var offset int64
	if start, ok := blobio.ParseRangeFrom(r.Header.Get("Range")); ok {
		offset, src.size = start, -1
		if err := blobio.Continuation(resp.Response, start, -1); err != nil {
			return fmt.Errorf("%w: registry %s: blob %s from byte %d: %w", ErrResume, r.Registry, r.Ref, start, err)
		}
		if resp.StatusCode == http.StatusOK {
			src.size = resp.ContentLength
			resp.StatusCode, resp.Status = http.StatusPartialContent, "206 Partial Content"
			resp.ContentLength = -1
			resp.Header.Del("Content-Length")
			if src.size >= 0 {
				resp.ContentLength = src.size - start
				resp.Header.Set("Content-Range", blobio.ContentRange{Start: start, End: src.size - 1, Total: src.size}.String())
			}
		} else if cr, err := blobio.ParseContentRange(resp.Header.Get("Content-Range")); err == nil {
			src.size = cr.Total
		}
	}
	resp.Body = blobio.NewResumer(ctx, blobio.Transfer{
		Body: resp.Body, From: src.Name(), Offset: offset, Size: src.size,
		Sources: []blobio.Source{src}, Budget: maxResumes,
	})
	return nil
}

// endpointSource is the one endpoint that answered a blob GET, as the
// source its transfer resumes from.
type endpointSource struct {
	c    *Client
	r    Request
	ep   endpoint
	cr   creds
	size int64 // the blob's size, -1 if not known
}

func (s *endpointSource) Name() string {
	return "registry " + s.r.Registry + ": blob " + s.r.Ref
}

// Open asks the endpoint, with the same credentials, retries and
// first-response budget as the first request, for the bytes from offset
// on.
func (s *endpointSource) Open(ctx context.Context, offset int64) (io.ReadCloser, error) {
	r := s.r
	r.Header = r.Header.Clone()
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.Header.Set("Range", blobio.RangeFrom(offset))
	resp, err := s.c.firstResponse(ctx, r.Registry, func(ctx context.Context, st *retryState) (*Response, error) {
		return s.c.retrying(ctx, r.Registry, st, func() (*Response, error) {
			return s.c.attempt(ctx, r, s.ep, s.cr)
		})
	})
	if err != nil {
		return nil, err
	}
	if err := blobio.Continuation(resp.Response, offset, s.size); err != nil {
		discard(resp.Response)
		return nil, err
	}
	return resp.Body, nil
}
