// Package mirror serves the OCI distribution pull path for containerd and
// other registry clients: routing, the allow-list of upstream registries,
// the local store → upstream order, coordination of fills so that each
// missing digest is fetched once, tag resolution with a short-lived cache,
// Range requests, and the one place where errors become OCI error JSON.
//
// It does not touch files (the diskstore does) and does not speak the
// upstream auth protocol (the upstream client does). It serves no push,
// delete or catalog requests.
package mirror
