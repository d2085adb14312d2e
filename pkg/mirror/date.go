package mirror

import (
	"net/http"
	"sync/atomic"
	"time"
)

// An answer's Date header, formatted once a second. net/http formats one
// for every answer that has none, and that was a fortieth of a cached
// manifest's cost; nginx, too, formats its Date once a second.

// dateValue is the Date header of one second.
type dateValue struct {
	sec   int64    // Unix seconds
	value []string // never changed: header maps share it
}

var lastDate atomic.Pointer[dateValue]

// dateHeader is the Date header value for now: http.TimeFormat, in UTC.
// Callers of the same second share the slice; Header.Add appends to a
// copy, since it is full.
func dateHeader(now time.Time) []string {
	sec := now.Unix()
	if d := lastDate.Load(); d != nil && d.sec == sec {
		return d.value
	}
	d := &dateValue{sec: sec, value: []string{now.UTC().Format(http.TimeFormat)}}
	lastDate.Store(d)
	return d.value
}
