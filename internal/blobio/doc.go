// Package blobio is the one home of the rules that keep a blob's byte
// stream whole and honest on its way through this node:
//
//   - ParseContentRange reads the Content-Range of a partial answer.
//
// It knows nothing of registries, peers or the store: the packages that
// do (pkg/upstream, pkg/peer, pkg/mirror, pkg/diskstore) supply the
// sources and decide what to do with the errors.
package blobio
