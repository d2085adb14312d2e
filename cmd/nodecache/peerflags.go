package main

import (
	"flag"
	"fmt"
	"strings"

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
	if !cfg.PeersEnabled() {
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
