package mirror

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/credentials"
	"nodecache/pkg/upstream"
)

// Who may be given what.
//
// Content that upstream serves anonymously is public: any client gets it.
// Content that needed credentials (the node's own, or a client's) is
// private: it is given to a client only after upstream confirmed, with
// that client's authority, that the repository the client named holds
// that digest. The authority is the client's credentials if it sent any,
// else the node's credentials for the registry, else none. A confirmation
// is kept for AccessTTL, keyed by the credentials' identity
// (credentials.Identifier, a keyed hash), the
// registry, the repository and the digest.
//
// So a client cannot read a private layer by guessing its digest under a
// public repository name, and a client whose pull secret upstream does
// not accept is told to authenticate (401), even when the layer is on
// disk. The node's own credentials are the node's identity, as with a
// kubelet credential provider: what they can read, every client of this
// node can read.

// challenge is what a client that must authenticate is sent. containerd
// answers a mirror's Basic challenge with the credentials it has for the
// image (for the CRI, the pod's image pull secret).
const challenge = `Basic realm="nodecache"`

// DefaultAccessTTL is how long upstream's confirmation that a client may
// read a private digest is reused: a rollout to many pods asks upstream
// once, and a revoked pull secret stops working within five minutes, the
// usual lifetime of a registry token.
const DefaultAccessTTL = 5 * time.Minute

// maxAccessEntries bounds the confirmations kept: one per client identity,
// repository and digest in use on a node, far below this.
const maxAccessEntries = 100_000

// accessKey names one confirmation.
type accessKey struct {
	identity string // credentials.Identifier of the client's credentials; "" for none
	registry string
	repo     string
	digest   digest.Digest
}

// clientAuth returns the credentials the client sent: Basic, the scheme
// nodecache's challenge asks for. Anything else counts as none. A request
// without an Authorization header, most of them, is told by one lookup
// of the canonical key, as BasicAuth's Header.Get would find it, without
// canonicalising it again.
func clientAuth(r *http.Request) credentials.Auth {
	if firstValue(r.Header, "Authorization") == "" {
		return credentials.Auth{}
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return credentials.Auth{}
	}
	return credentials.Auth{Username: user, Password: pass}
}

// authRequired is the answer that makes containerd send credentials.
func authRequired(format string, args ...any) *ocierr.Error {
	e := ocierr.Errorf(http.StatusUnauthorized, ocierr.CodeUnauthorized, format, args...)
	e.Header = http.Header{"Www-Authenticate": {challenge}}
	return e
}

// isAuthRequired reports whether err is an answer asking the client for
// credentials.
func isAuthRequired(err error) bool {
	var e *ocierr.Error
	return errors.As(err, &e) && e.Status == http.StatusUnauthorized
}

// ask sends req upstream with the node's authority (its credentials for
// the registry, or none). If upstream wants credentials, it asks again
// with the client's; a client that sent none is told to authenticate.
// A 403 or 404 also asks again when the client sent credentials, because
// some registries answer those rather than 401 for private repositories;
// without credentials they are passed on as they are.
func (s *Server) ask(ctx context.Context, q *request, req upstream.Request) (*upstream.Response, error) {
	resp, err := s.up.Fetch(ctx, req)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
	case http.StatusForbidden, http.StatusNotFound:
		if q.auth.IsZero() {
			return resp, nil
		}
	default:
		s.noteGrant(q, req, resp)
		return resp, nil
	}
	resp.Body.Close()
	if q.auth.IsZero() {
		return nil, authRequired("%s requires credentials for %s", q.registry, q.route.name)
	}
	req.Auth = q.auth
	if resp, err = s.up.Fetch(ctx, req); err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		resp.Body.Close()
		return nil, authRequired("%s did not accept the credentials for %s", q.registry, q.route.name)
	}
	s.noteGrant(q, req, resp)
	return resp, nil
}

// noteGrant remembers that upstream gave this client a manifest or blob
// of this repository with credentials, so serving it needs no second
// question. Only those answers prove that the repository holds the digest:
// a referrers list answers 200 for any digest.
func (s *Server) noteGrant(q *request, req upstream.Request, resp *upstream.Response) {
	if resp.StatusCode != http.StatusOK || resp.Auth == upstream.AuthAnonymous ||
		(req.Kind != ociref.KindManifests && req.Kind != ociref.KindBlobs) {
		return
	}
	d, err := digest.Parse(req.Ref)
	if err != nil {
		if d, err = digest.Parse(resp.Header.Get("Docker-Content-Digest")); err != nil {
			return
		}
	}
	s.access.Set(q.accessKey(d), struct{}{})
}

func (q *request) accessKey(d digest.Digest) accessKey {
	return accessKey{identity: q.identity, registry: q.registry, repo: q.route.name, digest: d}
}

// authorize checks that the client may be given content c under the
// repository it named (see the top of this file). Public content needs no
// check. A private digest that upstream now serves anonymously is marked
// public in the store.
func (s *Server) authorize(q *request, c contentInfo) error {
	if c.public {
		return nil
	}
	key := q.accessKey(c.digest)
	if _, fresh, ok := s.access.Get(key); ok && fresh {
		return nil
	}
	req := q.upstreamRequest(http.MethodHead, c.digest.String(), acceptHeader(parseAccept(q.r.Header)))
	req.Auth = q.auth
	resp, err := s.up.Fetch(q.r.Context(), req)
	if err != nil {
		return ocierr.Errorf(http.StatusServiceUnavailable, ocierr.CodeUnavailable,
			"cannot confirm access to %s in %s: %v", c.digest, q.route.name, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		s.access.Set(key, struct{}{})
		if resp.Auth == upstream.AuthAnonymous {
			s.store.MarkPublic(c.digest) // a failure only costs a check next time
		}
		return nil
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		if q.auth.IsZero() {
			return authRequired("%s in %s needs credentials", c.digest, q.route.name)
		}
		return authRequired("%s did not confirm access to %s in %s with these credentials", q.registry, c.digest, q.route.name)
	default:
		return upstreamError(q.registry, q.route.kind, resp.StatusCode, resp.Header)
	}
}
