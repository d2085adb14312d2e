// Package upstream is the registry client nodecache uses on a cache miss: it
// turns a pull-path request (registry, repository, kind, reference) into
// one HTTP exchange with the upstream registry.
//
// It owns:
//   - endpoint resolution: a registry name (containerd's ns value) to a base
//     URL, with explicit overrides and Docker Hub's special host;
//   - Docker Hub's "library/" prefix for single-component repositories;
//   - the anonymous bearer-token flow, with tokens cached per registry and
//     scope until they expire, and concurrent fetches coalesced;
//   - redirects, never carrying Authorization to another origin;
//   - connection timeouts and the User-Agent.
//
// It does not: touch the disk, verify digests (the disk store does that
// while it writes), map statuses to OCI errors (the mirror does that in one
// place), decide which registries are allowed (the mirror's allow-list runs
// before any call here), or push. Retries and resumed transfers are not
// written yet. Credential
// sources (Basic passwords, identity tokens) are not implemented yet; see
// the note in auth.go on where they fit.
package upstream
