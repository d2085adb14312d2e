package mirror

import (
	"context"
	"log/slog"
	"time"
)

// AccessLine is what the access log says of one request: one line per
// request, at level Info, with the message "request" and these fields in
// this order (docs/operations.md lists them).
type AccessLine struct {
	Time       time.Time // when the answer ended
	Method     string
	Route      string // the route's kind, "invalid" if the path did not parse
	Registry   string
	Repository string
	Reference  string // the tag or digest of the path
	Digest     string // the digest served, or asked for
	Status     int
	Bytes      int64
	Source     string // cache, upstream, peer, none
	Duration   time.Duration
}

// AccessMessage is the message of every access line.
const AccessMessage = "request"

// Record is l as a slog record: what any handler is given.
func (l AccessLine) Record() slog.Record {
	r := slog.NewRecord(l.Time, slog.LevelInfo, AccessMessage, 0)
	r.AddAttrs(
		slog.String("method", l.Method), slog.String("route", l.Route),
		slog.String("registry", l.Registry), slog.String("repository", l.Repository),
		slog.String("reference", l.Reference), slog.String("digest", l.Digest),
		slog.Int("status", l.Status), slog.Int64("bytes", l.Bytes),
		slog.String("source", l.Source), slog.Duration("duration", l.Duration))
	return r
}

// AccessHandler is a slog.Handler that writes an access line as it
// would write l.Record(), byte for byte, without building the record:
// the ten attributes of a record cost a tenth of a cached manifest's
// answer. The daemon's text handler is one; any other handler is given
// the record.
type AccessHandler interface {
	slog.Handler
	HandleAccess(ctx context.Context, l AccessLine) error
}
