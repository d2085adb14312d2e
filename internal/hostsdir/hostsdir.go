// Package hostsdir owns containerd's hosts directory (its config_path,
// such as /etc/containerd/certs.d): one hosts.toml per registry, plus
// _default for every registry without one.
//
// It reads a directory with containerd v2's own loader, so that nodecache
// sees exactly the hosts containerd would try (Load). It checks a file
// the way that loader decodes it (Check), and it writes, merges and
// removes nodecache's host table in a file by editing the text, keeping
// every other host and comment byte for byte, with durable atomic
// replaces (Write, Remove).
//
// It does not decide which registries to mirror or where nodecache
// listens (cmd/nodecache's hosts command does), and it does not turn hosts
// into upstream endpoints (pkg/upstream does, with its loop guard).
package hostsdir

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
)

const (
	// DefaultDir is where containerd's packaged configurations and most
	// Kubernetes installers point config_path.
	DefaultDir = "/etc/containerd/certs.d"
	// DefaultName is containerd's directory for every registry that has
	// no directory of its own.
	DefaultName = "_default"
	// Marker opens every file nodecache creates, so that Remove can tell
	// its own files, which it deletes, from files it merged into.
	Marker = "# Written by `nodecache hosts`"
	// BackupSuffix names the copy Write keeps of a file it replaces.
	BackupSuffix = ".nodecache-backup"
)

// Load returns the hosts containerd tries for registry with config_path
// dir, in order: dir/<registry>/hosts.toml, else dir/_default/hosts.toml,
// else the registry itself over https. It reads the certificates the file
// names, as containerd does.
func Load(ctx context.Context, dir, registry string) ([]docker.RegistryHost, error) {
	hosts, err := config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(dir)})(registry)
	if err != nil {
		return nil, fmt.Errorf("hosts dir %s: registry %s: %w", dir, registry, err)
	}
	return hosts, nil
}

// Path is the hosts.toml of the registry directory name under dir.
func Path(dir, name string) string {
	return filepath.Join(dir, name, "hosts.toml")
}

// Server is the endpoint containerd itself uses for registry name when
// no hosts.toml says otherwise.
func Server(name string) string {
	if name == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + name
}
