package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"nodecache/pkg/mirror"
	"nodecache/pkg/peer"
)

// peerFlags are serve's peer flags, read into Config by check.
type peerFlags struct {
	peers      *listFlag
	dns        *string
	file       *string
	advertise  *string
	listen     *string
	secretFile *string
}

func addPeerFlags(fs *flag.FlagSet) *peerFlags {
	p := &peerFlags{peers: &listFlag{}}
	fs.Var(p.peers, "peers", "host:port of peer nodes, comma-separated; repeatable")
	p.dns = fs.String("peer-dns", "", "name:port whose addresses are all peers on port, re-resolved every 30s (a headless Service in Kubernetes)")
	p.file = fs.String("peer-file", "", "file of peers, one host:port per line, '#' comments; reloaded on change")
	p.advertise = fs.String("advertise", "", "host:port of this node's peer listener as its peers know it; required with peers")
	p.listen = fs.String("peer-listen", "", "address to serve the peer API on (host:port, the same port on every node); required with peers")
	p.secretFile = fs.String("peer-secret-file", "", "file holding the secret shared by all peers (at least 16 bytes); reloaded on change; required with peers")
	return p
}

// check validates the peer flags and copies them into cfg. Errors are
// one line naming the flag.
func (p *peerFlags) check(cfg *Config) error {
	for _, v := range p.peers.values {
		addrs, err := peer.ParseList(v)
		if err != nil {
			return fmt.Errorf("--peers %q: %v", v, err)
		}
		cfg.Peers = append(cfg.Peers, addrs...)
	}
	cfg.PeerDNS, cfg.PeerFile = *p.dns, *p.file
	cfg.Advertise, cfg.PeerListen, cfg.PeerSecretFile = *p.advertise, *p.listen, *p.secretFile
	if cfg.PeerDNS != "" {
		if _, err := peer.NormalizeAddr(cfg.PeerDNS); err != nil {
			return fmt.Errorf("--peer-dns %q: want name:port: %v", cfg.PeerDNS, err)
		}
	}
	if !cfg.peersEnabled() {
		for _, f := range []struct{ name, v string }{
			{"--advertise", cfg.Advertise}, {"--peer-listen", cfg.PeerListen}, {"--peer-secret-file", cfg.PeerSecretFile},
		} {
			if f.v != "" {
				return fmt.Errorf("%s: needs --peers, --peer-dns or --peer-file", f.name)
			}
		}
		return nil
	}
	for _, f := range []struct{ name, v string }{
		{"--advertise", cfg.Advertise}, {"--peer-listen", cfg.PeerListen}, {"--peer-secret-file", cfg.PeerSecretFile},
	} {
		if f.v == "" {
			return fmt.Errorf("%s: required with --peers, --peer-dns or --peer-file", f.name)
		}
	}
	if _, err := peer.NormalizeAddr(cfg.Advertise); err != nil {
		return fmt.Errorf("--advertise %q: %v", cfg.Advertise, err)
	}
	if strings.HasPrefix(cfg.PeerListen, "unix://") {
		return fmt.Errorf("--peer-listen %q: peers connect over TCP; want host:port", cfg.PeerListen)
	}
	if err := checkListen(cfg.PeerListen); err != nil {
		return fmt.Errorf("--peer-listen %q: %v", cfg.PeerListen, err)
	}
	return nil
}

// peersEnabled reports whether any peer discovery flag is set.
func (cfg *Config) peersEnabled() bool {
	return len(cfg.Peers) > 0 || cfg.PeerDNS != "" || cfg.PeerFile != ""
}

// peerParts are the pieces of the peer layer that serve runs.
type peerParts struct {
	members *peer.Membership
	secret  *peer.Secret
	client  *peer.Client
}

// newPeers builds the membership, secret and client from cfg; nil
// without peers. Errors name the flag at fault.
func newPeers(cfg Config, log *slog.Logger) (*peerParts, error) {
	if !cfg.peersEnabled() {
		return nil, nil
	}
	health := peer.NewHealth(peer.WithLogger(log))
	members, err := peer.NewMembership(cfg.Advertise, peer.Sources{
		Static: cfg.Peers, DNS: cfg.PeerDNS, File: cfg.PeerFile,
	}, health, peer.WithLogger(log))
	if err != nil {
		return nil, usagef("%v", err) // its errors name the flag
	}
	secret, err := peer.LoadSecret(cfg.PeerSecretFile, peer.WithLogger(log))
	if err != nil {
		return nil, usagef("--peer-secret-file %s: %v", cfg.PeerSecretFile, err)
	}
	return &peerParts{members: members, secret: secret, client: peer.NewClient(secret, health)}, nil
}

// mirrorOption is the mirror's option for p; none without peers.
func (p *peerParts) mirrorOption() mirror.Option {
	if p == nil {
		return func(*mirror.Server) {}
	}
	return mirror.WithPeers(mirror.Peers{Members: p.members, Client: p.client})
}

// handler is the peer API in front of m.
func (p *peerParts) handler(m *mirror.Server, log *slog.Logger) *peer.Handler {
	return peer.NewHandler(p.secret, m.Allowed, m, peer.WithLogger(log))
}

// collectors are the peer metrics for h.
func (p *peerParts) collectors(h *peer.Handler) []prometheus.Collector {
	return []prometheus.Collector{p.members, p.client, h}
}

// openPeerListener opens --peer-listen into ls.peer, unless systemd
// passed sockets named peer.
func openPeerListener(cfg Config, ls *listeners) error {
	if len(ls.peer) > 0 {
		return nil
	}
	l, err := listen(cfg.PeerListen)
	if err != nil {
		return fmt.Errorf("--peer-listen %s: %w", cfg.PeerListen, err)
	}
	ls.peer = []net.Listener{l}
	return nil
}
