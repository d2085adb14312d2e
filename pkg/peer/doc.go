// Package peer lets the nodes of a cluster share what they fetch: each
// digest has one owner node, chosen by rendezvous hashing over the current
// peer set, and the other nodes ask the owner for it instead of upstream.
// A layer pulled by a thousand nodes then leaves the cluster once.
//
// It owns discovery (a static list, a DNS name re-resolved periodically,
// a watched file), ownership, request signing and verification with a
// shared secret, peer health, the client that fetches from an owner and
// the handler of the peer API. It does not store or fill blobs, decide
// what content is public, or speak to upstream: the mirror does, through
// the Fetcher interface, which it implements.
//
// # Pieces
//
//   - Membership: the peer set from Sources (--peers, --peer-dns,
//     --peer-file), without this node (--advertise), and Owner(d), which
//     reads an immutable snapshot through an atomic pointer and takes no
//     lock. Run keeps the set current.
//   - Health: peers that failed recently. MarkBad skips a peer for
//     DefaultBadFor; Owner reports the digests of a bad owner as this
//     node's own, and OwnerExcept passes them to the next live node in
//     their rendezvous order, which every asker agrees on.
//   - Secret: the shared secret from --peer-secret-file, reloaded when the
//     file changes. Sign and Verify implement the request signature.
//   - Client: Fetch(ctx, owner, registry, repo, d, offset), and Get with
//     a whole Ask (mode, asker, hop, failed source), with short connect
//     and header timeouts, resumable from an offset; a redirect comes
//     back as a *RedirectError.
//   - Fanout: at most F streams of one blob at once (--peer-fanout); asks
//     beyond it are pointed, round robin, to nodes receiving the blob
//     from this one or holding it, which serve it in ModeRelay from their
//     store or fill only. Holder knowledge is soft and bounded.
//   - OwnerExcept and After walk a digest's rendezvous order: the one
//     node every receiver continues from after a failure, and the nodes
//     a new owner asks before upstream.
//   - Handler: the peer API served on --peer-listen, in front of a
//     Fetcher.
//
// Membership, Client, Handler and Fanout are prometheus.Collectors of
// nodecache_peers{state}, nodecache_peer_membership_changes_total,
// nodecache_peer_fetches_total{result},
// nodecache_peer_requests_total{result}, nodecache_peer_streams and
// nodecache_peer_redirects_total; pkg/daemon registers them.
//
// # Wiring
//
// In pkg/daemon (peers.go), when any of --peers, --peer-dns or --peer-file
// is set; then --advertise, --peer-listen and --peer-secret-file are all
// required (Config.Validate), and without peers they are refused:
//
//	health := peer.NewHealth(peer.WithLogger(log))
//	members, err := peer.NewMembership(cfg.Advertise, peer.Sources{
//		Static: cfg.Peers, DNS: cfg.PeerDNS, File: cfg.PeerFile,
//	}, health, peer.WithLogger(log))
//	secret, err := peer.LoadSecret(cfg.PeerSecretFile, peer.WithLogger(log))
//	client := peer.NewClient(secret, health)
//	fanout := peer.NewFanout(cfg.PeerFanout)
//	mirrorServer := mirror.New(store, upstream, mirror.WithPeers(mirror.Peers{Members: members, Client: client, Fanout: fanout}))
//	handler := peer.NewHandler(secret, mirrorServer.Allowed, mirrorServer, peer.WithLogger(log))
//	reg.MustRegister(members, client, handler, fanout)
//	g.Go(func() error { return members.Run(ctx) })
//	g.Go(func() error { return secret.Run(ctx) })
//	// serve handler on --peer-listen, whose port every node shares and
//	// which is the port in --advertise and in every peer address.
//
// In pkg/mirror, inside the flight that fills d on a miss:
//
//	if owner, self := members.Owner(d); !self {
//		body, size, err := client.Fetch(ctx, owner, registry, repo, d, 0)
//		if err == nil {
//			// fill from body exactly as from an upstream body: the
//			// fill verifies digest and size. On a mismatch
//			// (diskstore.ErrDigestMismatch, ErrSizeMismatch) call
//			// client.ReportCorrupt(owner, d). A body that breaks can be
//			// resumed from upstream at the bytes already written.
//		}
//		// on any error: fill from upstream, as without peers
//	}
//
// and implement Fetcher.ServePeer with the same fetch path minus the
// peer step, so that concurrent peer requests for d join the one fill of
// d like local clients do, and a peer request is never forwarded: requests
// arrive only through ServePeer, and IsPeerRequest tells a peer request
// that reached the pull path by mistake.
//
// # Security
//
// Each peer request carries HeaderPeer, HeaderTime and HeaderSignature: an
// HMAC-SHA256 under the shared secret of the method, path and query, and
// the time. Requests older or newer than MaxClockSkew are refused, so a
// captured request can be replayed only briefly and only for the same
// blob. The secret is at least MinSecretLength bytes; after it changes the
// previous one is accepted for DefaultRotationGrace while every node
// catches up. Peer traffic is plain HTTP: the signature authorises, it
// does not hide which digests a node pulls, and the content is public.
//
// The mode, the asker, the hop count and the failed source of an ask are
// in the signed query (Ask), so a captured request cannot be replayed
// with another meaning.
//
// Peers serve only content the mirror classifies as public. A peer request
// carries no client credentials that upstream could check, so the mirror's
// ServePeer refuses content fetched with credentials (403) and the asking
// node goes to upstream with its client's credentials itself. The handler
// also applies the mirror's allow-list to ?ns=, so no peer can make a node
// contact a registry it would not contact for its own clients.
//
// # Failure handling
//
// A dead owner costs at most DefaultDialTimeout (300 ms), a hung one
// DefaultResponseHeaderTimeout (2 s), a stalled body DefaultStallTimeout;
// each marks the owner bad, and the asking node goes to the next live
// node in the digest's rendezvous order (the mirror's peerTransfer),
// which fills once for every such asker, or to upstream when that node is
// itself. A 4xx
// from the owner (unknown blob, registry not allowed there) and a 5xx (the
// owner's upstream failing) also send the node to upstream but do not
// mark the owner, since they describe upstream rather than the peer; a
// 401 does, since the secrets differ and every request would fail alike.
//
// Non-goals: a tracker or scheduler (what a node knows of holders is soft
// state learnt from its own streams), replication, TLS between peers, and
// peers that disagree about the peer set for long (during a change, two
// nodes may name different owners for a few keys; each owner still fills
// correctly, the cost is an extra upstream fetch).
package peer
