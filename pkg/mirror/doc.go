// Package mirror serves the OCI distribution pull path for containerd and
// other registry clients: routing, the allow-list of upstream registries,
// the local store → peer → upstream order, coordination of fills so that
// each missing digest is fetched once, tag resolution with a short-lived
// cache and stale-if-error (the records kept in a TagStore, on disk in the
// daemon), tags/list and referrers answers kept the same way, Range
// requests, and which OCI error each of its errors becomes
// (internal/ocierr writes them).
//
// It does not touch files (the diskstore does) and does not speak the
// upstream auth protocol (the upstream client does). It serves no push,
// delete or catalog requests.
//
// # Words
//
//   - A fill copies a download into the store (a diskstore.Fill), where
//     it is verified and committed.
//   - A flight is the coalesced start of a fill: one per digest at a time.
//   - A source is where a fill's bytes come from: the peer that owns the
//     digest, a node it points to that holds or is receiving it (a relay),
//     or upstream. A peerTransfer (peertransfer.go) picks them in turn.
//   - Fetch names a request to upstream or to a peer, and nothing else.
//   - Content is what an answer serves: a committed file, a fill in
//     progress, or an uncached download.
//
// # A cold blob, from the handler to disk and back
//
//  1. [Server.ServeHTTP] (handler.go) parses the path (parseRoute), takes
//     the registry from ?ns=, the path or the default and checks it
//     against the allow-list (registryFor, route.resolve in route.go),
//     and hands a request to serveBlob (blobs.go), which calls obtain
//     (fill.go).
//  2. obtain asks the store with lookup: a committed file would become a
//     storedFile, a fill in progress a fillingContent (content.go). The
//     blob is in neither, so obtain calls flights.fly (flight.go), which
//     runs startFill for the first caller of the digest; every other
//     caller waits for that flight's landing.
//  3. startFill looks in the store again, since a fill may have been
//     committed since the miss. It opens the source with openSource
//     (source.go): peerSource (peer.go) for the peer that owns the digest,
//     else a GET upstream through ask (access.go). It begins a
//     diskstore.Fill sized by the answer and runs copyFill in a goroutine
//     of its own, on the Server's context and fill timeout rather than the
//     request's, so a client hanging up ends no fill; once no client is
//     left for a grace period, the fill stops (fillClients, unread.go).
//     A blob fill takes a slot (slots.go) first: at most so many run at
//     once, and the rest wait in their flights; manifest fills, small and
//     needed before any layer, take none. The flight then lands
//     (landedFill): it lasts one round trip, not the download.
//  4. copyFill copies the source into the fill. The store hashes the bytes
//     as they arrive, and Fill.Commit checks the digest and size, releases
//     the last byte to the readers, then fsyncs and renames the file into
//     place; a mismatch aborts the fill instead.
//  5. Back in obtain, the starter and every caller that joined get a
//     fillingContent. serve (content.go) checks that this client may have
//     it (authorize, access.go) and serveContent sends the headers at
//     once, then copies from a diskstore.Reader of the fill. The reader
//     follows the writer and holds back the last byte until the content
//     is verified, so no client receives a whole answer that failed
//     verification, nor waits for the fsync; a fill that fails cuts the
//     connection (panic(http.ErrAbortHandler)).
//  6. The next request finds the committed file: lookup returns a
//     storedFile, whose *os.File reaches the connection by sendfile.
//
// A flight can also land two other ways. landedUncached: the store cannot
// take the content (too large, disk full), so the download streams to one
// caller through a verifying reader (uncachedStream, uncached.go) and the
// others fetch their own copy (fetchUncached). landedLookAgain: the digest
// was committed, or another fill of it began, while the caller looked;
// obtain looks again, at most maxLooks times.
//
// Manifests take the same path (serveManifest, manifests.go) once a tag is
// resolved to a digest (resolveTag, tags.go): by upstream's HEAD, or, for
// registries whose HEAD carries no digest, by a GET whose bytes getTag
// hands to keepManifest, which fills the store through a flight like any
// other fill. Upstream's 404 for a tag is a record too (tagrecords.go).
// Tag lists and referrers are kept per query, in memory (listings.go).
// Manifests stored in a media type the client does not accept, and
// listings too large to keep, are relayed from upstream uncached
// (relay.go).
package mirror
