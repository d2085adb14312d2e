// Package blobio is the one home of the rules that keep a blob's byte
// stream whole and honest on its way through this node:
//
//   - ParseContentRange reads the Content-Range of a partial answer, and
//     ContentRange.String writes one;
//   - Digester hashes bytes as they pass and checks digest and size at the
//     end; Verifier is a reader built on it that holds back the last byte
//     until that check passes, and Releasable is the hold-back rule for
//     readers that follow a file being written instead of a stream;
//   - Resumer continues a transfer that breaks, with "Range: bytes=N-"
//     (RangeFrom), from the next of an ordered list of Sources (the last
//     again once the list is spent), within a budget; Continuation checks
//     that an HTTP answer really continues at N;
//   - StallReader ends a transfer that sends nothing for a while, with an
//     injected timer (AfterFunc) so tests need not wait.
//
// It knows nothing of registries, peers or the store: the packages that
// do (pkg/upstream, pkg/peer, pkg/mirror, pkg/diskstore) supply the
// sources and decide what to do with the errors.
package blobio
