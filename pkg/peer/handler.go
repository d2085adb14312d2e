package peer

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"nodecache/internal/ocierr"
	"nodecache/internal/ociref"
)

// Fetcher serves blobs to peers. The mirror implements it.
type Fetcher interface {
	// ServePeer writes blob d of repo in registry to w, honouring r's
	// Range, from the local store or by filling it from upstream, never
	// from another peer. It serves only content the mirror may give any
	// client: content fetched with credentials is refused (403 DENIED),
	// since a peer request carries no client credentials to check.
	ServePeer(w http.ResponseWriter, r *http.Request, registry, repo string, d digest.Digest)
}

// Handler results, the values of the result label of
// nodecache_peer_requests_total.
const (
	servedResult       = "served"       // passed to the Fetcher
	unauthorizedResult = "unauthorized" // no or bad signature
	deniedResult       = "denied"       // registry not allowed here
	invalidResult      = "invalid"      // wrong method, path, digest or name
)

// Handler serves the peer API on --peer-listen. Its one route is
//
//	GET|HEAD /peer/v1/blobs/<digest>?ns=<registry>&repo=<repository>
//
// A request must be signed (Secret.Verify) or gets 401 whatever it asks
// for, so an unauthenticated caller learns nothing, not even which routes
// exist. A signed request is then checked (405 for other methods, 404 for
// other paths, 400 for a bad digest or name, 403 for a registry not on the
// allow-list) and handed to the Fetcher. Names and digests are checked
// with ociref, as the mirror's pull path checks them, so a peer cannot make
// this node fetch a digest its own clients could not ask for (sha384, for
// one). Errors are OCI error JSON.
//
// Handler is a prometheus.Collector of nodecache_peer_requests_total.
type Handler struct {
	secret   *Secret
	allowed  func(registry string) bool
	fetcher  Fetcher
	log      *slog.Logger
	requests *prometheus.CounterVec
}

// NewHandler returns the peer API handler. allowed is the mirror's
// allow-list: a peer cannot make this node contact a registry it would not
// contact for its own clients. Its option is WithLogger.
func NewHandler(secret *Secret, allowed func(registry string) bool, f Fetcher, opts ...HandlerOption) *Handler {
	h := &Handler{
		secret:  secret,
		allowed: allowed,
		fetcher: f,
		log:     handlerOptions(opts).log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodecache_peer_requests_total",
			Help: "Requests to the peer API, by result (served, unauthorized, denied, invalid).",
		}, []string{"result"}),
	}
	for _, r := range []string{servedResult, unauthorizedResult, deniedResult, invalidResult} {
		h.requests.WithLabelValues(r)
	}
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h.secret.Verify(r); err != nil {
		// Debug: a peer with another secret would fill the log at info,
		// and the counter already shows it.
		h.log.Debug("peer request refused", slog.String("remote", r.RemoteAddr), slog.Any("error", err))
		h.refuse(w, r, unauthorizedResult, http.StatusUnauthorized, ocierr.CodeUnauthorized, "peer request not authenticated")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.refuse(w, r, invalidResult, http.StatusMethodNotAllowed, ocierr.CodeUnsupported, r.Method+" is not supported by the peer API")
		return
	}
	ref, ok := strings.CutPrefix(r.URL.Path, blobsPath)
	if !ok {
		h.refuse(w, r, invalidResult, http.StatusNotFound, ocierr.CodeUnsupported, "not a peer API path")
		return
	}
	d := digest.Digest(ref)
	if ociref.Check(d) != nil {
		h.refuse(w, r, invalidResult, http.StatusBadRequest, ocierr.CodeDigestInvalid, "invalid digest")
		return
	}
	q := r.URL.Query()
	registry, repo := strings.ToLower(q.Get("ns")), q.Get("repo")
	if ociref.CheckName(repo) != nil {
		h.refuse(w, r, invalidResult, http.StatusBadRequest, ocierr.CodeNameInvalid, "invalid repository name")
		return
	}
	if registry == "" || !h.allowed(registry) {
		h.refuse(w, r, deniedResult, http.StatusForbidden, ocierr.CodeDenied, "registry is not allowed on this node")
		return
	}
	if _, err := ParseAsk(r, registry, repo, d); err != nil {
		h.refuse(w, r, invalidResult, http.StatusBadRequest, ocierr.CodeUnsupported, err.Error())
		return
	}
	h.requests.WithLabelValues(servedResult).Inc()
	h.fetcher.ServePeer(w, r, registry, repo, d)
}

// refuse counts a refusal and writes its error, OCI error JSON without a
// detail: {"errors":[{"code","message"}]}.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, result string, status int, code, message string) {
	h.requests.WithLabelValues(result).Inc()
	ocierr.Write(w, r, &ocierr.Error{Status: status, Code: code, Message: message})
}

// Describe implements prometheus.Collector.
func (h *Handler) Describe(ch chan<- *prometheus.Desc) { h.requests.Describe(ch) }

// Collect implements prometheus.Collector.
func (h *Handler) Collect(ch chan<- prometheus.Metric) { h.requests.Collect(ch) }
