package mirror

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
	"nodecache/pkg/credentials"
	"nodecache/pkg/upstream"
)

// ServeHTTP serves one pull-path request and logs one access line.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK, source: "none"}
	kind := "invalid"
	defer func() {
		took := time.Since(start)
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method), slog.String("route", kind),
			slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
			slog.String("source", rec.source), slog.Duration("duration", took))
		if s.metrics != nil {
			s.metrics.observeRequest(kind, rec, took)
		}
	}()
	rt, e := parseRoute(r.URL.Path)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		refused := ocierr.Errorf(http.StatusMethodNotAllowed, ocierr.CodeUnsupported, "%s is not supported by a pull-through mirror", r.Method)
		if e != nil && e.Status == http.StatusMethodNotAllowed {
			refused.Header = e.Header // a path that allows no method
		}
		writeError(rec, r, refused)
		return
	}
	if e != nil {
		writeError(rec, r, e)
		return
	}
	kind = string(rt.kind)
	if rt.kind == ociref.KindBase {
		rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		rec.Header().Set("Content-Type", "application/json")
		rec.Header().Set("Content-Length", "2")
		io.WriteString(rec, "{}")
		return
	}
	registry, e := s.registryFor(r)
	if e != nil {
		writeError(rec, r, e)
		return
	}
	auth := clientAuth(r)
	req := &request{rec: rec, r: r, registry: registry, route: rt, auth: auth, identity: s.ids.Of(auth)}
	var err error
	switch rt.kind {
	case ociref.KindBlobs:
		err = s.serveBlob(req)
	case ociref.KindManifests:
		err = s.serveManifest(req)
	case ociref.KindTags, ociref.KindReferrers:
		err = s.passThrough(req)
	}
	if err != nil {
		if errors.Is(err, upstream.ErrUnreachable) {
			err = s.unreachable(r, registry, err)
		}
		writeError(rec, r, err)
	}
}

// unreachable is the answer when registry could not be reached, and logs
// why. The answer names the registry; the endpoint and address dialled
// for it are for the operator's eyes only. A registry marked down is
// logged once by the circuit, not on every request, and its answer says
// when the next probe is (Retry-After).
func (s *Server) unreachable(r *http.Request, registry string, err error) error {
	e := unreachable(registry)
	var open *upstream.CircuitOpenError
	if !errors.As(err, &open) {
		s.log.LogAttrs(r.Context(), slog.LevelWarn, "registry unreachable",
			slog.String("registry", registry), slog.Any("error", err))
		return e
	}
	secs := int64(min(max(open.RetryAfter, time.Second), MaxRetryAfter) / time.Second)
	e.Header = http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}}
	return e
}

// registryFor picks the upstream registry from ?ns= and checks it against
// the allow-list. Nothing is contacted for a registry that is not allowed.
func (s *Server) registryFor(r *http.Request) (string, *ocierr.Error) {
	ns := strings.ToLower(r.URL.Query().Get("ns"))
	if ns == "" {
		ns = s.defaultRegistry
	}
	if !s.allowed[ns] {
		return "", ocierr.Errorf(http.StatusForbidden, ocierr.CodeDenied,
			"registry %q is not allowed; allow it with --allow-registry %s", truncate(ns), truncate(ns))
	}
	return ns, nil
}

// request is one pull-path request being served.
type request struct {
	rec      *recorder
	r        *http.Request
	registry string
	route    route
	auth     credentials.Auth // what the client sent; never stored or logged
	identity string           // names auth in caches (credentials.Identifier); "" for none
}

func (q *request) upstreamRequest(method string, ref string, header http.Header) upstream.Request {
	return upstream.Request{
		Registry: q.registry, Repo: q.route.name, Kind: q.route.kind,
		Ref: ref, Method: method, Header: header,
	}
}

// recorder notes what a response was, for the access log. It passes
// ReadFrom through so that a file copied to it still goes out by sendfile.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	source string // cache, upstream, none
	result string // resultHit, resultMiss, ...; empty: resultUpstream
}

func (w *recorder) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

func (w *recorder) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	n, err := io.Copy(w.ResponseWriter, src)
	w.bytes += n
	return n, err
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
