package mirror

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
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
	x := &exchange{rec: recorder{ResponseWriter: w, status: http.StatusOK, source: "none", kind: "invalid"}}
	rec := &x.rec
	complete := false // stays false if handle panics: an aborted answer
	defer func() {
		if rec.canceled || (!complete && clientLeft(r, rec)) {
			rec.status, rec.result = statusClientClosed, resultCanceled
		}
		end := time.Now()
		took := end.Sub(start)
		s.logRequest(r, rec, end, took)
		if s.metrics != nil {
			s.metrics.observeRequest(rec.kind, rec, took)
		}
	}()
	s.handle(x, r, start)
	complete = true
}

// exchange is one request's recorder and, once its path parsed, the
// request: one allocation for both, on the path of every answer.
type exchange struct {
	rec recorder
	req request
}

// logRequest writes the access line of a request, which ended at end,
// with the time already taken for the duration. The line is given to an
// AccessHandler as it is, else as a record built as Logger.LogAttrs
// would, but without the caller's program counter (no handler of the
// daemon prints the source).
func (s *Server) logRequest(r *http.Request, rec *recorder, end time.Time, took time.Duration) {
	h, ctx := s.log.Handler(), r.Context()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	line := AccessLine{
		Time: end, Method: r.Method, Route: rec.kind,
		Registry: rec.registry, Repository: rec.repo, Reference: rec.ref, Digest: rec.digest(),
		Status: rec.status, Bytes: rec.bytes, Source: rec.source, Duration: took,
	}
	// A log output that fails has nowhere to report it.
	if ah, ok := h.(AccessHandler); ok {
		ah.HandleAccess(ctx, line)
		return
	}
	h.Handle(ctx, line.Record())
}

// handle answers r, which arrived at start, on x's recorder, noting on
// it what the access log says.
func (s *Server) handle(x *exchange, r *http.Request, start time.Time) {
	rec := &x.rec
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
	rec.kind = string(rt.kind)
	if rt.kind == ociref.KindBase {
		rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		rec.Header().Set("Content-Type", "application/json")
		rec.Header().Set("Content-Length", "2")
		io.WriteString(rec, "{}")
		return
	}
	registry, e := s.registryFor(r, &rt)
	rec.registry, rec.repo, rec.ref = registry, rt.name, rt.tag
	if e != nil {
		rec.registry = truncate(registry) // a refused ns is whatever the client sent
	}
	if rt.digest != "" {
		rec.ref = rt.digest.String()
		if rt.kind != ociref.KindReferrers { // a referrers answer is not its subject
			rec.wanted = rec.ref
		}
	}
	if e != nil {
		writeError(rec, r, e)
		return
	}
	auth := clientAuth(r)
	x.req = request{rec: rec, r: r, registry: registry, route: rt, auth: auth, identity: s.ids.Of(auth)}
	req := &x.req
	if s.clockIsTimeNow {
		req.at = start // microseconds ago: the reading clock would take
	}
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
		s.fail(req, err)
	}
}

// fail answers q with err. If its client has hung up, the request is
// logged and counted as canceled (499), not as an error of this server or
// of the registry, but the answer is still written: net/http also takes a
// client that only shut its side of the connection for gone, and such a
// client would otherwise read the empty 200 of a handler that wrote
// nothing.
func (s *Server) fail(q *request, err error) {
	if clientGone(q.r) {
		q.rec.canceled = true
		writeError(q.rec, q.r, err)
		return
	}
	if errors.Is(err, upstream.ErrUnreachable) && !errors.Is(err, context.Canceled) {
		err = s.unreachable(q.r, q.registry, err)
	}
	writeError(q.rec, q.r, err)
}

// clientGone reports whether r's client has hung up: net/http cancels a
// request's context when its connection closes or a write to it fails.
// A context the server ended itself (ErrAborted) is no hang-up.
func clientGone(r *http.Request) bool {
	ctx := r.Context()
	return errors.Is(ctx.Err(), context.Canceled) && !errors.Is(context.Cause(ctx), ErrAborted)
}

// clientLeft reports whether an answer that did not complete was cut by
// its client: it hung up, or a write to it failed, and not because the
// server ended the request and closed its connection (ErrAborted).
func clientLeft(r *http.Request, rec *recorder) bool {
	if errors.Is(context.Cause(r.Context()), ErrAborted) {
		return false
	}
	return rec.writeFailed || clientGone(r)
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

// registryFor picks the upstream registry from the path, ?ns= and the
// default registry, checks it against the allow-list, and leaves rt's
// name the repository at that registry (route.resolve). Nothing is
// contacted for a registry that is not allowed. The registry asked for is
// returned with a refusal too, for the log.
func (s *Server) registryFor(r *http.Request, rt *route) (string, *ocierr.Error) {
	ns := strings.ToLower(queryValue(r.URL.RawQuery, "ns"))
	if ns == "" && rt.host == "" {
		s.metrics.requestWithoutRegistry()
	}
	return rt.resolve(ns, s.allowed, s.defaultRegistry)
}

// maxFastQuery is the longest query queryValue reads itself: a pull
// path's is ?ns=REGISTRY, tens of bytes. Its bound keeps the parameters
// far below the limit url.ParseQuery enforces.
const maxFastQuery = 1 << 10

// queryValue is url.ParseQuery(raw).Get(key) without building the map of
// every parameter: a pull request has at most ?ns=, and reading it is on
// every request's path. A query that needs unescaping, has a semicolon
// (which ParseQuery refuses) or is long is left to ParseQuery.
func queryValue(raw, key string) string {
	if raw == "" {
		return ""
	}
	if len(raw) > maxFastQuery || needsParseQuery(raw) {
		v, _ := url.ParseQuery(raw)
		return v.Get(key)
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if k, v, _ := strings.Cut(pair, "="); k == key {
			return v
		}
	}
	return ""
}

// needsParseQuery reports whether raw has a byte queryValue leaves to
// url.ParseQuery: strings.ContainsAny(raw, "%+;") without building the
// set of bytes on every request.
func needsParseQuery(raw string) bool {
	for i := range len(raw) {
		switch raw[i] {
		case '%', '+', ';':
			return true
		}
	}
	return false
}

// request is one pull-path request being served.
type request struct {
	rec      *recorder
	r        *http.Request
	registry string
	route    route
	auth     credentials.Auth // what the client sent; never stored or logged
	identity string           // names auth in caches (credentials.Identifier); "" for none
	// mem is the reader of a body served from memory (memContent.open),
	// kept here so that a hit allocates none of its own.
	mem memBody
	// at is the server's clock for the request's lookups of tag records
	// and manifests in memory (clock); zero until read.
	at time.Time
}

// clock is the server's clock for q's lookups of tag records and
// manifests in memory: read once for all of them, a reading per lookup
// being a tenth of a hit's own time. It is read again after q waited on
// upstream (forgetClock). With the default clock, the request's start is
// the reading.
func (s *Server) clock(q *request) time.Time {
	if q.at.IsZero() {
		q.at = s.now()
	}
	return q.at
}

// forgetClock makes the next clock of q a new reading: q waited.
func (q *request) forgetClock() { q.at = time.Time{} }

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
	status   int
	bytes    int64
	source   string // cache, upstream, none
	result   string // resultHit, resultMiss, ...; empty: resultUpstream
	canceled bool   // the client hung up before its answer was sent
	// writeFailed is set when a write to the client failed: it hung up,
	// or stopped reading and was cut off. A write by sendfile fails
	// without cancelling the request's context, so this is the only sign.
	writeFailed bool

	kind     string // the route's kind, "invalid" if it did not parse
	registry string // the registry asked for, allowed or not; "" if none
	repo     string // the repository at that registry
	ref      string // the tag or digest of the path
	wanted   string // the digest of the path, of a manifest or blob
}

// digest is the digest of what was served, or asked for: the answer's
// Docker-Content-Digest, which for a tag is the digest it resolved to,
// else the digest the path asked for.
func (w *recorder) digest() string {
	if d := firstValue(w.Header(), "Docker-Content-Digest"); d != "" {
		return d
	}
	return w.wanted
}

// firstValue is h.Get(key) for a key already in canonical form, without
// canonicalising it again: a lookup on the path of every answer.
func firstValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// WriteHeader notes the status and sends the header, with a Date taken
// from dateHeader unless one is set.
func (w *recorder) WriteHeader(status int) {
	w.status = status
	if h := w.Header(); h["Date"] == nil {
		h["Date"] = dateHeader(time.Now())
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recorder) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	w.writeFailed = w.writeFailed || err != nil
	return n, err
}

func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	if sendsFile(src) {
		n, err := io.Copy(w.ResponseWriter, src)
		w.bytes += n
		// A committed file fails to read only with its disk: an error
		// here is the connection's.
		w.writeFailed = w.writeFailed || err != nil
		return n, err
	}
	r := &readErr{Reader: src}
	n, err := io.Copy(w.ResponseWriter, r)
	w.bytes += n
	w.writeFailed = w.writeFailed || (err != nil && r.err == nil) // not the source's: the client's
	return n, err
}

// sendsFile reports whether src is what net/http sends by sendfile: a
// file, or part of one (copyBody's io.LimitReader). It must reach the
// connection unwrapped.
func sendsFile(src io.Reader) bool {
	if l, ok := src.(*io.LimitedReader); ok {
		src = l.R
	}
	_, ok := src.(*os.File)
	return ok
}

// readErr keeps its reader's error other than io.EOF, so that a failed
// copy can be told to be the source's or the client's.
type readErr struct {
	io.Reader
	err error
}

func (r *readErr) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }
