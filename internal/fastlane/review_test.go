package fastlane

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Next's Shutdown alone closes the loop's idle connections, as it closes
// its own: the loop must not keep serving keep-alive while Next drains.
func TestNextShutdownClosesLoopConns(t *testing.T) {
	tl := startLane(t, routes{}, http.HandlerFunc(serveNext))
	idle := dialRaw(t, tl.addr)
	idle.send(getReq("/fast/ok"))
	idle.expect(fastAnswer("GET", "/fast/ok"))
	shutdownNext(t, tl.Next)
	idle.expectEOF()
}

// A write to a client that is gone ends the request's context with the
// write's error, as net/http ends it: the handler learns its client left.
func TestWriteFailureEndsContext(t *testing.T) {
	ended := make(chan error, 1)
	fast := routes{"/fast/stream": func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		rc := http.NewResponseController(w)
		for {
			if _, err := w.Write(chunk); err != nil {
				break
			}
			if err := rc.Flush(); err != nil {
				break
			}
		}
		if r.Context().Err() == nil {
			ended <- nil
			return
		}
		ended <- context.Cause(r.Context())
	}}
	tl := startLane(t, fast, http.HandlerFunc(serveNext))
	c := dialRaw(t, tl.addr)
	c.c.(*net.TCPConn).SetLinger(0) // a reset: the server's writes fail
	c.send(getReq("/fast/stream"))
	c.c.Close()
	err := waitFor(t, ended, "the handler")
	if err == nil {
		t.Fatal("the write failed and the request's context did not end")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatalf("context ended with %v, want the write's error", err)
	}
}

// A panic in Pick closes that connection and is logged; the server goes
// on serving.
func TestPickPanic(t *testing.T) {
	tl := startLane(t, routes{}, http.HandlerFunc(serveNext), func(s *Server) {
		s.Pick = func(r *http.Request) bool {
			if r.URL.Path == "/fast/panic" {
				panic("pick failed")
			}
			return pickFast(r)
		}
	})
	c := dialRaw(t, tl.addr)
	c.send(getReq("/fast/panic"))
	c.expectEOF()
	if !strings.Contains(tl.log.String(), "pick failed") {
		t.Fatalf("log %q does not name the panic", tl.log.String())
	}
	ok := dialRaw(t, tl.addr)
	ok.send(getReq("/fast/ok"))
	ok.expect(fastAnswer("GET", "/fast/ok"))
}

// deadlineConn records the read deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// A connection handed off in the middle of a head keeps that head's
// deadline: the first deadline Next sets (its header timeout, from when
// it got the connection) cannot move it later, so a client trickling a
// head is cut at one header timeout, not two. Later deadlines are Next's.
func TestHandoffKeepsHeadDeadline(t *testing.T) {
	limit := time.Unix(1000, 0)
	for _, tc := range []struct {
		name        string
		limit, next time.Time
		want        time.Time
	}{
		{"later", limit, limit.Add(time.Second), limit},
		{"none", limit, time.Time{}, limit},
		{"earlier", limit, limit.Add(-time.Second), limit.Add(-time.Second)},
		{"no limit", time.Time{}, limit.Add(time.Second), limit.Add(time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc := &deadlineConn{}
			c := &replayConn{Conn: dc, limit: tc.limit}
			c.SetReadDeadline(tc.next)
			c.SetReadDeadline(limit.Add(time.Hour))
			if len(dc.set) != 2 || !dc.set[0].Equal(tc.want) || !dc.set[1].Equal(limit.Add(time.Hour)) {
				t.Fatalf("deadlines set %v, want [%v %v]", dc.set, tc.want, limit.Add(time.Hour))
			}
		})
	}
}
