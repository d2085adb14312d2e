package daemon

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/opencontainers/go-digest"

	"nodecache/internal/ocierr"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/mirror"
	"nodecache/pkg/pin"
)

// maxAdminBody bounds a request body of the admin API: a list of
// digests to check, 72 bytes each with JSON quoting, so 1 MiB holds over
// 10,000, more than the blobs of any image set prefetched at once.
const maxAdminBody = 1 << 20

// admin is the operations API, served on the metrics listener only (the
// mirror listener serves anyone who can pull), and there only to clients
// on this node (sameHost): listing or evicting what a node holds is for
// its operators.
//
//	GET  /admin/images            cached images (ImageView)
//	POST /admin/evict?ref=REF     remove an image's entries no other image uses;
//	                              REF is an image reference or a bare digest
//	POST /admin/committed         {"digests":[...]} -> which are committed in the store
//
// images and evict wait for the store's index to load after a start
// (adminLoadWait); committed asks the store by digest, which answers for
// every entry while it loads.
type admin struct {
	store  *diskstore.Store
	mirror *mirror.Server
	pins   *pin.Manager // nil without --pin-file
}

func (a *admin) register(mux *http.ServeMux) {
	mux.Handle("GET /admin/images", sameHost(a.images))
	mux.Handle("POST /admin/evict", sameHost(a.evict))
	mux.Handle("POST /admin/committed", sameHost(a.committed))
}

// sameHost answers only clients on this node. The metrics listener is
// often on the node IP for Prometheus (the DaemonSet puts it there),
// where every pod of the cluster reaches it; listing what a node holds
// and evicting it is for the node's operators, so /metrics stays open
// and the admin API does not.
func sameHost(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if !fromSameHost(r.RemoteAddr, local) {
			ocierr.Write(w, r, ocierr.Errorf(http.StatusForbidden, ocierr.CodeDenied,
				"the admin API answers only clients on this node: a unix socket, loopback, or this node's own address"))
			return
		}
		h(w, r)
	})
}

// fromSameHost reports whether a connection from remote, accepted on
// local, comes from this host: over a unix socket, from a loopback
// address, or from the address it was made to (a host-network process
// dialing the node IP; Linux drops packets from outside that claim a
// local source address).
func fromSameHost(remote string, local net.Addr) bool {
	if local != nil && local.Network() == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return true
	}
	tcp, ok := local.(*net.TCPAddr)
	if !ok {
		return false
	}
	own, ok := netip.AddrFromSlice(tcp.IP)
	return ok && own.Unmap() == ip.WithZone("")
}

// adminLoadWait bounds how long images and evict wait for the store's
// index to load after a start: they walk the manifests in the index,
// which holds part of the store until then. A million entries load in
// about 3 s, 4 s from a cold disk cache; a minute (ls's own timeout)
// is far past that, and a load still running then answers 503.
const adminLoadWait = time.Minute

// loaded waits until the store's index is whole, or answers 503.
func (a *admin) loaded(w http.ResponseWriter, r *http.Request) bool {
	t := time.NewTimer(adminLoadWait)
	defer t.Stop()
	select {
	case <-a.store.Loaded():
		return true
	case <-r.Context().Done():
	case <-t.C:
	}
	ocierr.Write(w, r, ocierr.Errorf(http.StatusServiceUnavailable, ocierr.CodeUnavailable,
		"the store's index is still loading after a start; try again"))
	return false
}

func (a *admin) catalog(r *http.Request) *catalog {
	var pins []pin.Image
	if a.pins != nil {
		pins = a.pins.Images()
	}
	return newCatalog(r.Context(), a.store, a.mirror, pins)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (a *admin) images(w http.ResponseWriter, r *http.Request) {
	if !a.loaded(w, r) {
		return
	}
	writeJSON(w, struct {
		Images []ImageView `json:"images"`
	}{a.catalog(r).list()})
}

func (a *admin) evict(w http.ResponseWriter, r *http.Request) {
	ref, err := parseEvictRef(r.URL.Query().Get("ref"))
	if err != nil {
		ocierr.Write(w, r, ocierr.Errorf(http.StatusBadRequest, ocierr.CodeNameInvalid, "ref: %v", err))
		return
	}
	if !a.loaded(w, r) {
		return
	}
	c := a.catalog(r)
	roots := c.resolve(ref)
	if len(roots) == 0 {
		ocierr.Write(w, r, ocierr.Errorf(http.StatusNotFound, ocierr.CodeManifestUnknown, "%s is not cached", ref))
		return
	}
	res, err := c.evict(roots)
	if errors.Is(err, errPinned) {
		ocierr.Write(w, r, ocierr.Errorf(http.StatusConflict, ocierr.CodeDenied, "%s: %v", ref, err))
		return
	}
	if err != nil {
		ocierr.Write(w, r, ocierr.Errorf(http.StatusInternalServerError, ocierr.CodeUnavailable, "%s: %v", ref, err))
		return
	}
	writeJSON(w, res)
}

// CommittedRequest and CommittedResponse are the body and answer of
// POST /admin/committed.
type CommittedRequest struct {
	Digests []digest.Digest `json:"digests"`
}

// CommittedResponse lists which digests the store holds, verified.
type CommittedResponse struct {
	Committed []digest.Digest `json:"committed"`
	Missing   []digest.Digest `json:"missing"`
}

func (a *admin) committed(w http.ResponseWriter, r *http.Request) {
	var req CommittedRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody+1))
	if err := dec.Decode(&req); err != nil {
		ocierr.Write(w, r, ocierr.Errorf(http.StatusBadRequest, ocierr.CodeDigestInvalid,
			"want {\"digests\": [...]} of at most %d bytes: %v", maxAdminBody, err))
		return
	}
	res := CommittedResponse{Committed: []digest.Digest{}, Missing: []digest.Digest{}}
	for _, d := range req.Digests {
		if err := diskstore.Check(d); err != nil {
			ocierr.Write(w, r, ocierr.Errorf(http.StatusBadRequest, ocierr.CodeDigestInvalid, "%q: %v", d, err))
			return
		}
		if _, err := a.store.Stat(d); err == nil {
			res.Committed = append(res.Committed, d)
		} else {
			res.Missing = append(res.Missing, d)
		}
	}
	writeJSON(w, res)
}

// parseEvictRef reads what evict names: an image reference, or a bare
// digest (sha256:...), as ls --json shows it, for an image no tag names.
func parseEvictRef(s string) (pin.Ref, error) {
	if d, err := digest.Parse(s); err == nil {
		if err := diskstore.Check(d); err != nil {
			return pin.Ref{}, err
		}
		return pin.Ref{Digest: d}, nil
	}
	return pin.ParseRef(s)
}
