package main

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestPeerFlags(t *testing.T) {
	cfg, err := parseServe([]string{
		"--peers", "10.0.0.2:5051,10.0.0.3:5051", "--peers", "[::ffff:10.0.0.4]:5051",
		"--advertise", "10.0.0.1:5051", "--peer-listen", "10.0.0.1:5051",
		"--peer-secret-file", "/etc/nodecache/peer-secret",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.2:5051", "10.0.0.3:5051", "10.0.0.4:5051"}; !slices.Equal(cfg.Peers, want) {
		t.Errorf("Peers = %v, want %v (split, normalised)", cfg.Peers, want)
	}
	if !cfg.PeersEnabled() || cfg.PeerListen != "10.0.0.1:5051" || cfg.Advertise != "10.0.0.1:5051" {
		t.Errorf("peer config %+v", cfg)
	}

	cfg, err = parseServe(nil, io.Discard)
	if err != nil || cfg.PeersEnabled() {
		t.Fatalf("without peer flags: peers enabled %v, error %v", cfg.PeersEnabled(), err)
	}

	// The flags the DaemonSet passes.
	_, err = parseServe([]string{
		"--peer-listen=10.1.2.3:5051", "--advertise=10.1.2.3:5051",
		"--peer-dns=nodecache-peers.kube-system.svc.cluster.local:5051",
		"--peer-secret-file=/etc/nodecache/peer-secret",
	}, io.Discard)
	if err != nil {
		t.Fatalf("deploy/daemonset.yaml's flags: %v", err)
	}
}

func TestPeerFlagErrors(t *testing.T) {
	full := []string{"--advertise", "10.0.0.1:5051", "--peer-listen", ":5051", "--peer-secret-file", "/s"}
	for _, tc := range []struct {
		name string
		args []string
		want string // the flag the error names first
	}{
		{"no advertise", []string{"--peers", "10.0.0.2:5051", "--peer-listen", ":5051", "--peer-secret-file", "/s"}, "--advertise"},
		{"no listen", []string{"--peer-dns", "peers.local:5051", "--advertise", "10.0.0.1:5051", "--peer-secret-file", "/s"}, "--peer-listen"},
		{"no secret", []string{"--peer-file", "/etc/peers", "--advertise", "10.0.0.1:5051", "--peer-listen", ":5051"}, "--peer-secret-file"},
		{"bad peer", append([]string{"--peers", "10.0.0.2"}, full...), "--peers"},
		{"bad peer port", append([]string{"--peers", "10.0.0.2:0"}, full...), "--peers"},
		{"bad dns", append([]string{"--peer-dns", "peers.local"}, full...), "--peer-dns"},
		{"bad advertise", []string{"--peers", "10.0.0.2:5051", "--advertise", "10.0.0.1", "--peer-listen", ":5051", "--peer-secret-file", "/s"}, "--advertise"},
		{"bad listen", []string{"--peers", "10.0.0.2:5051", "--advertise", "10.0.0.1:5051", "--peer-listen", "node-1:5051", "--peer-secret-file", "/s"}, "--peer-listen"},
		{"unix listen", []string{"--peers", "10.0.0.2:5051", "--advertise", "10.0.0.1:5051", "--peer-listen", "unix:///run/p.sock", "--peer-secret-file", "/s"}, "--peer-listen"},
		{"listen without peers", []string{"--peer-listen", ":5051"}, "--peer-listen"},
		{"secret without peers", []string{"--peer-secret-file", "/s"}, "--peer-secret-file"},
		{"negative fanout", append([]string{"--peers", "10.0.0.2:5051", "--peer-fanout", "-1"}, full...), "--peer-fanout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseServe(tc.args, io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, tc.want) {
				t.Fatalf("error %q: want one line starting with %s", msg, tc.want)
			}
		})
	}
}
