package daemon

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"nodecache/pkg/mirror"
	"nodecache/pkg/peer"
)

// peerParts are the pieces of the peer layer that serve runs.
type peerParts struct {
	members *peer.Membership
	secret  *peer.Secret
	client  *peer.Client
	fanout  *peer.Fanout
}

// newPeers builds the membership, secret and client from cfg; nil
// without peers. Errors name the flag at fault.
func newPeers(cfg Config, log *slog.Logger) (*peerParts, error) {
	if !cfg.PeersEnabled() {
		return nil, nil
	}
	health := peer.NewHealth(peer.WithLogger(log))
	members, err := peer.NewMembership(cfg.Advertise, peer.Sources{
		Static: cfg.Peers, DNS: cfg.PeerDNS, File: cfg.PeerFile,
	}, health, peer.WithLogger(log))
	if err != nil {
		return nil, configErrorf("%v", err) // its errors name the flag
	}
	secret, err := peer.LoadSecret(cfg.PeerSecretFile, peer.WithLogger(log))
	if err != nil {
		return nil, configErrorf("--peer-secret-file %s: %v", cfg.PeerSecretFile, err)
	}
	return &peerParts{members: members, secret: secret, client: peer.NewClient(secret, health),
		fanout: peer.NewFanout(cfg.PeerFanout)}, nil
}

// mirrorOption is the mirror's option for p; none without peers.
func (p *peerParts) mirrorOption() mirror.Option {
	if p == nil {
		return func(*mirror.Server) {}
	}
	return mirror.WithPeers(mirror.Peers{Members: p.members, Client: p.client, Fanout: p.fanout})
}

// handler is the peer API in front of m.
func (p *peerParts) handler(m *mirror.Server, log *slog.Logger) *peer.Handler {
	return peer.NewHandler(p.secret, m.Allowed, m, peer.WithLogger(log))
}

// collectors are the peer metrics for h.
func (p *peerParts) collectors(h *peer.Handler) []prometheus.Collector {
	return []prometheus.Collector{p.members, p.client, h, p.fanout}
}
