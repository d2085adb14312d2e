package main

import (
	"flag"
	"fmt"
	"nodecache/internal/settings"

	"nodecache/pkg/daemon"
	"nodecache/pkg/peer"
)

// peerFlags are serve's peer flags, read into the daemon's Config by
// copyTo.
type peerFlags struct {
	peers      *settings.List
	dns        *string
	file       *string
	advertise  *string
	listen     *string
	secretFile *string
	fanout     *int
}

func addPeerFlags(fs *flag.FlagSet) *peerFlags {
	p := &peerFlags{peers: &settings.List{}}
	fs.Var(p.peers, "peers", "host:port of peer nodes, comma-separated; repeatable")
	p.dns = fs.String("peer-dns", "", "name:port whose addresses are all peers on port, re-resolved every 30s (a headless Service in Kubernetes)")
	p.file = fs.String("peer-file", "", "file of peers, one host:port per line, '#' comments; reloaded on change")
	p.advertise = fs.String("advertise", "", "host:port of this node's peer listener as its peers know it; required with peers")
	p.listen = fs.String("peer-listen", "", "address to serve the peer API on (host:port, the same port on every node); required with peers")
	p.secretFile = fs.String("peer-secret-file", "", "file holding the secret shared by all peers (at least 16 bytes); reloaded on change; required with peers")
	p.fanout = fs.Int("peer-fanout", peer.DefaultFanout, "peers this node streams one blob to at once; the rest are pointed to nodes receiving or holding it")
	return p
}

// copyTo splits and normalises --peers and copies the peer flags into
// cfg; cfg.Validate checks them together.
func (p *peerFlags) copyTo(cfg *daemon.Config) error {
	for _, v := range p.peers.Values {
		addrs, err := peer.ParseList(v)
		if err != nil {
			return fmt.Errorf("--peers %q: %v", v, err)
		}
		cfg.Peers = append(cfg.Peers, addrs...)
	}
	cfg.PeerDNS, cfg.PeerFile = *p.dns, *p.file
	cfg.Advertise, cfg.PeerListen, cfg.PeerSecretFile = *p.advertise, *p.listen, *p.secretFile
	cfg.PeerFanout = *p.fanout
	return nil
}
