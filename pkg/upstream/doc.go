// Package upstream is the registry client nodecache uses on a cache miss: it
// turns a pull-path request (registry, repository, kind, reference) into
// an HTTP exchange with the upstream registry.
//
// It owns:
//   - endpoint resolution: a registry name (containerd's ns value) to an
//     ordered list of endpoints: an explicit override, else the entries of
//     containerd's hosts directory (mirrors, then the server, with their
//     TLS settings and headers, skipping entries that point at nodecache),
//     else https://NAME with Docker Hub's special host;
//   - Docker Hub's "library/" prefix for single-component repositories;
//   - authentication: Basic, and bearer tokens fetched anonymously, with a
//     username and password, or with an identity token, or a registry
//     token sent as it is; tokens are cached per endpoint, scope and
//     credential identity until they expire, and concurrent fetches
//     coalesced;
//   - redirects, never carrying Authorization to another origin, never
//     from https to http, and never (checked at dial time, after
//     resolution) to a loopback, link-local, private, unspecified or
//     multicast address outside the endpoint's own address class;
//   - retries of 5xx, 429 and failed connections within a budget, all
//     of a request's attempts within one first-response budget, and
//     resumption of broken blob transfers with Range requests, a body
//     that sends nothing for the stall window counting as broken;
//   - connection timeouts and the User-Agent;
//   - the circuit of each registry (circuit.go): attempts in a row without
//     an answer mark it down, its requests then fail at once, and one
//     background probe per registry notices its return.
//
// It does not: touch the disk, verify digests (the disk store does that
// while it writes), map statuses to OCI errors (the mirror does that in one
// place), decide which registries are allowed (the mirror's allow-list runs
// before any call here), decide which clients may receive content fetched
// with credentials (the mirror does, using Response.Auth), load
// credentials (pkg/credentials does), or push.
package upstream
