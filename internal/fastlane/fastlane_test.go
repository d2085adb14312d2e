package fastlane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// A keep-alive connection carries picked requests one after the other,
// pipelined ones included, and their answers come back in order, byte for
// byte.
func TestPickedKeepAlive(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1280) // more than writeBufSize
	fast := routes{"/fast/big": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", fixedDate)
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		io.WriteString(w, big)
	}}
	bigAnswer := "HTTP/1.1 200 OK\r\nContent-Length: 20480\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Date: " + fixedDate + "\r\n\r\n" + big
	tl := startLane(t, fast, http.HandlerFunc(serveNext))
	c := dialRaw(t, tl.addr)

	for _, p := range []string{"/fast/1", "/fast/2"} {
		c.send(getReq(p))
		c.expect(fastAnswer("GET", p))
	}
	c.send(getReq("/fast/3"), getReq("/fast/big"), getReq("/fast/4"), getReq("/fast/5"))
	c.expect(fastAnswer("GET", "/fast/3") + bigAnswer + fastAnswer("GET", "/fast/4") + fastAnswer("GET", "/fast/5"))
	// A head that arrives in two writes.
	c.send("GET /fast/6 HTTP/1.1\r\nHo")
	c.send("st: example\r\n\r\n")
	c.expect(fastAnswer("GET", "/fast/6"))
}

// A HEAD answer has the handler's headers, its Content-Length included,
// and no body; the connection goes on with the next request.
func TestHEAD(t *testing.T) {
	fast := routes{"/fast/declared": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", fixedDate)
		w.Header().Set("Content-Length", "100") // and nothing written
	}}
	tests := []struct {
		name, path, want string
	}{
		{"body written", "/fast/x", fastAnswer("HEAD", "/fast/x")},
		{"length declared, no body written", "/fast/declared",
			"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nDate: " + fixedDate + "\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := startLane(t, fast, http.HandlerFunc(serveNext))
			c := dialRaw(t, tl.addr)
			c.send(reqHead("HEAD", tt.path), getReq("/fast/after"))
			c.expect(tt.want + fastAnswer("GET", "/fast/after"))
			c.send(reqHead("HEAD", tt.path))
			c.expect(tt.want)
			c.send(getReq("/fast/later"))
			c.expect(fastAnswer("GET", "/fast/later"))
		})
	}
}

// Without a Content-Length from the handler, a body is sent chunked; a
// handler that writes nothing answers 200 with Content-Length: 0. Either
// way the connection goes on.
func TestAnswerFraming(t *testing.T) {
	fast := routes{
		"/fast/chunked": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello, ")
			io.WriteString(w, "")
			io.WriteString(w, "world")
		},
		"/fast/nothing": func(w http.ResponseWriter, r *http.Request) {},
	}
	tests := []struct {
		name, method, path string
		chunked            bool
		length             int64
		body               string
	}{
		{"chunked", "GET", "/fast/chunked", true, -1, "hello, world"},
		{"nothing written", "GET", "/fast/nothing", false, 0, ""},
		// Its Content-Length is TestAutomaticHeadersAsNetHTTP's.
		{"nothing written, HEAD", "HEAD", "/fast/nothing", false, -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := startLane(t, fast, http.HandlerFunc(serveNext))
			c := dialRaw(t, tl.addr)
			for range 2 {
				c.send(reqHead(tt.method, tt.path), getReq("/fast/after"))
				resp, body := c.response(tt.method)
				if resp.StatusCode != http.StatusOK || body != tt.body || resp.Close {
					t.Fatalf("answer %s, body %q, close %v; want 200 OK, %q, keep-alive", resp.Status, body, resp.Close, tt.body)
				}
				if chunked := slices.Equal(resp.TransferEncoding, []string{"chunked"}); chunked != tt.chunked {
					t.Errorf("Transfer-Encoding %q, want chunked %v", resp.TransferEncoding, tt.chunked)
				}
				if tt.length >= 0 && resp.Header.Get("Content-Length") != strconv.FormatInt(tt.length, 10) {
					t.Errorf("Content-Length %q, want %d", resp.Header.Get("Content-Length"), tt.length)
				}
				if resp.Header.Get("Date") == "" {
					t.Error("no Date")
				}
				c.expect(fastAnswer("GET", "/fast/after"))
			}
		})
	}
}

// A body shorter than its declared length ends the connection after the
// answer: the client would wait for the rest.
func TestShortBodyCloses(t *testing.T) {
	fast := routes{"/fast/short": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", fixedDate)
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "abcd")
	}}
	tl := startLane(t, fast, http.HandlerFunc(serveNext))
	c := dialRaw(t, tl.addr)
	c.send(getReq("/fast/ok"))
	c.expect(fastAnswer("GET", "/fast/ok"))
	c.send(getReq("/fast/short"))
	c.expect("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Date: " + fixedDate + "\r\n\r\nabcd")
	c.expectEOF()
}

// Writes beyond the declared length fail with http.ErrContentLength and
// send nothing; the answer, whole, keeps the connection.
func TestWriteBeyondContentLength(t *testing.T) {
	errs := make(chan []error, 1)
	fast := routes{"/fast/long": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", fixedDate)
		w.Header().Set("Content-Length", "5")
		var got []error
		for _, s := range []string{"abcdef", "abc", "de", "x"} {
			_, err := io.WriteString(w, s)
			got = append(got, err)
		}
		errs <- got
	}}
	tl := startLane(t, fast, http.HandlerFunc(serveNext))
	c := dialRaw(t, tl.addr)
	c.send(getReq("/fast/long"), getReq("/fast/after"))
	c.expect("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Date: " + fixedDate + "\r\n\r\nabcde" + fastAnswer("GET", "/fast/after"))
	got := waitFor(t, errs, "the handler's writes")
	want := []error{http.ErrContentLength, nil, nil, http.ErrContentLength}
	if !slices.Equal(got, want) {
		t.Errorf("Write errors %v, want %v", got, want)
	}
}

// Connection: close, from the client or the handler, is in the answer,
// and the connection closes after it.
func TestConnectionClose(t *testing.T) {
	fast := routes{
		"/fast/close": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			serveFast(w, r)
		},
		"/fast/chunked": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "chunked body")
		},
	}
	closed := func(path string) string {
		return strings.Replace(fastAnswer("GET", path), "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\nConnection: close\r\n", 1)
	}
	tests := []struct {
		name, req, want string
	}{
		{"client", getReq("/fast/x", "Connection: close"), closed("/fast/x")},
		{"handler", getReq("/fast/close"), closed("/fast/close")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := startLane(t, fast, http.HandlerFunc(serveNext))
			c := dialRaw(t, tl.addr)
			c.send(getReq("/fast/first"))
			c.expect(fastAnswer("GET", "/fast/first"))
			c.send(tt.req)
			c.expect(tt.want)
			c.expectEOF()
		})
	}
	t.Run("client, chunked", func(t *testing.T) {
		tl := startLane(t, fast, http.HandlerFunc(serveNext))
		c := dialRaw(t, tl.addr)
		c.send(getReq("/fast/chunked", "Connection: close"))
		resp, body := c.response("GET")
		// ReadResponse takes Connection: close out of the header into Close.
		if !resp.Close || body != "chunked body" {
			t.Fatalf("answer Close %v, body %q; want Connection: close, %q", resp.Close, body, "chunked body")
		}
		c.expectEOF()
	})
}

// A handler's panic closes its connection and no other; a panic other
// than http.ErrAbortHandler is logged.
func TestHandlerPanic(t *testing.T) {
	tests := []struct {
		name   string
		value  any
		flush  bool // part of the answer is out before the panic
		partly string
		logged bool
	}{
		{name: "abort", value: http.ErrAbortHandler},
		{name: "abort after a flush", value: http.ErrAbortHandler, flush: true,
			partly: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain; charset=utf-8\r\n" +
				"Date: " + fixedDate + "\r\n\r\nabcd"},
		{name: "other value", value: "boom-3141", logged: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fast := routes{"/fast/panic": func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Date", fixedDate)
				w.Header().Set("Content-Length", "10")
				io.WriteString(w, "abcd")
				if tt.flush {
					http.NewResponseController(w).Flush()
				}
				panic(tt.value)
			}}
			tl := startLane(t, fast, http.HandlerFunc(serveNext))
			other := dialRaw(t, tl.addr)
			other.send(getReq("/fast/before"))
			other.expect(fastAnswer("GET", "/fast/before"))

			c := dialRaw(t, tl.addr)
			c.send(getReq("/fast/panic"))
			c.expect(tt.partly)
			c.expectEOF()

			other.send(getReq("/fast/after"))
			other.expect(fastAnswer("GET", "/fast/after"))
			again := dialRaw(t, tl.addr)
			again.send(getReq("/fast/again"))
			again.expect(fastAnswer("GET", "/fast/again"))

			log := tl.log.String()
			if logged := strings.Contains(log, "panic serving"); logged != tt.logged {
				t.Fatalf("logged %v, want %v: %q", logged, tt.logged, log)
			}
			if tt.logged && (!strings.Contains(log, fmt.Sprint(tt.value)) || !strings.Contains(log, "TestHandlerPanic")) {
				t.Errorf("log %q has not the panic's value and stack", log)
			}
		})
	}
}

// A request the loop does not take goes to Next with its body whole, and
// so does every later request of its connection, the one sent in the
// same write included.
func TestHandoff(t *testing.T) {
	big := strings.Repeat("b", 5000)
	tests := []struct {
		name, req, method, want string
	}{
		{"not picked", getReq("/slow/x"), "GET", nextSummary("GET", "/slow/x", "", 0)},
		{"POST with a body",
			"POST /fast/x HTTP/1.1\r\nHost: example\r\nContent-Length: 11\r\n\r\nhello world",
			"POST", nextSummary("POST", "/fast/x", "hello world", 0)},
		{"GET with a body",
			"GET /fast/x HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello",
			"GET", nextSummary("GET", "/fast/x", "hello", 0)},
		{"HEAD with a body",
			"HEAD /fast/x HTTP/1.1\r\nHost: example\r\nContent-Length: 5\r\n\r\nhello",
			"HEAD", nextSummary("HEAD", "/fast/x", "hello", 0)},
		{"chunked body",
			"GET /fast/x HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			"GET", nextSummary("GET", "/fast/x", "hello", 0)},
		{"HTTP/1.0", "GET /fast/x HTTP/1.0\r\nHost: example\r\nConnection: keep-alive\r\n\r\n",
			"GET", nextSummary("GET", "/fast/x", "", 0)},
		{"Expect", getReq("/fast/x", "Expect: 100-continue"), "GET", nextSummary("GET", "/fast/x", "", 0)},
		{"Upgrade", getReq("/fast/x", "Upgrade: websocket"), "GET", nextSummary("GET", "/fast/x", "", 0)},
		{"head over 4 KiB", getReq("/fast/x", "X-Big: "+big), "GET", nextSummary("GET", "/fast/x", "", len(big))},
		{"absolute form", "GET http://example/fast/x HTTP/1.1\r\nHost: example\r\n\r\n",
			"GET", nextSummary("GET", "/fast/x", "", 0)},
		{"OPTIONS", reqHead("OPTIONS", "/fast/x"), "OPTIONS", nextSummary("OPTIONS", "/fast/x", "", 0)},
	}
	for _, tt := range tests {
		for _, first := range []bool{true, false} {
			name := tt.name + ", after a picked request"
			if first {
				name = tt.name + ", first"
			}
			t.Run(name, func(t *testing.T) {
				tl := startLane(t, routes{}, http.HandlerFunc(serveNext))
				c := dialRaw(t, tl.addr)
				if !first {
					c.send(getReq("/fast/before"))
					c.expect(fastAnswer("GET", "/fast/before"))
				}
				c.send(tt.req, getReq("/fast/after"))
				c.expectNext(tt.method, tt.want)
				c.expectNext("GET", nextSummary("GET", "/fast/after", "", 0))
				c.send(getReq("/fast/later"))
				c.expectNext("GET", nextSummary("GET", "/fast/later", "", 0))
			})
		}
	}
	t.Run("pipelined behind picked ones", func(t *testing.T) {
		tl := startLane(t, routes{}, http.HandlerFunc(serveNext))
		c := dialRaw(t, tl.addr)
		c.send(getReq("/fast/1"), getReq("/fast/2"), getReq("/slow/3"), getReq("/fast/4"))
		c.expect(fastAnswer("GET", "/fast/1") + fastAnswer("GET", "/fast/2"))
		c.expectNext("GET", nextSummary("GET", "/slow/3", "", 0))
		c.expectNext("GET", nextSummary("GET", "/fast/4", "", 0))
	})
}

// The largest head the loop takes is headBufSize; a larger one goes to
// Next.
func TestHeadSizeLimit(t *testing.T) {
	pad := func(total int) string { // a head of total bytes
		h := getReq("/fast/x", "X-Big: ")
		return getReq("/fast/x", "X-Big: "+strings.Repeat("p", total-len(h)))
	}
	tl := startLane(t, routes{}, http.HandlerFunc(serveNext))
	c := dialRaw(t, tl.addr)
	c.send(pad(headBufSize))
	c.expect(fastAnswer("GET", "/fast/x"))
	c.send(pad(headBufSize+1), getReq("/fast/after"))
	c.expectNext("GET", nextSummary("GET", "/fast/x", "", headBufSize+1-len(getReq("/fast/x", "X-Big: "))))
	c.expectNext("GET", nextSummary("GET", "/fast/after", "", 0))
}

// A request net/http refuses is not answered in the loop: net/http
// answers it, with its error. Bytes that cannot begin a head the loop
// takes go to Next at once, without waiting for the end of a head: a TLS
// client on the plain port waits for the server to speak, and net/http
// answers it 400.
func TestHandoffNetHTTPErrors(t *testing.T) {
	tests := []struct {
		name, req string
		status    int // 0: any error status of net/http's
	}{
		{"no Host", "GET /fast/x HTTP/1.1\r\n\r\n", 0},
		{"two Hosts", "GET /fast/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 0},
		{"malformed Host, space", "GET /fast/x HTTP/1.1\r\nHost: exa mple\r\n\r\n", 0},
		{"malformed Host, angle bracket", "GET /fast/x HTTP/1.1\r\nHost: x<y\r\n\r\n", 0},
		{"header name with a space", "GET /fast/x HTTP/1.1\r\nHost: example\r\nBad Name: v\r\n\r\n", 0},
		{"unsupported version", "GET /fast/x HTTP/2.0\r\nHost: example\r\n\r\n", 0},
		// A ClientHello's record header and the start of the hello; its
		// bytes hold a line end but never an empty line.
		{"TLS ClientHello", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x0a\x5e\x99\x00\x01\x02", http.StatusBadRequest},
		{"not a request line, no head end", "NOT-HTTP\r\nHost: exa", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := startLane(t, routes{}, http.HandlerFunc(serveNext))
			c := dialRaw(t, tl.addr)
			c.send(tt.req)
			resp, body := c.response("GET")
			if resp.StatusCode < 400 || resp.Header.Get("X-Next") != "" {
				t.Fatalf("answer %s %q, want net/http's error", resp.Status, body)
			}
			if tt.status != 0 && resp.StatusCode != tt.status {
				t.Fatalf("answer %s %q, want net/http's %d", resp.Status, body, tt.status)
			}
		})
	}
}

// A picked request is the request net/http's server would give its
// handler.
func TestPickedRequestAsNetHTTP(t *testing.T) {
	summary := func(via string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			var header []string
			for k, vs := range r.Header {
				header = append(header, fmt.Sprintf("%s=%q", k, vs))
			}
			slices.Sort(header)
			w.Header().Set("X-Via", via)
			w.Header().Set("X-Remote", r.RemoteAddr)
			w.Header().Set("X-Summary", fmt.Sprintf(
				"method=%q url=%q path=%q rawpath=%q query=%q uri=%q proto=%q %d.%d host=%q close=%v length=%d te=%q body=%q,%v header=%q ctx=%v",
				r.Method, r.URL, r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.RequestURI, r.Proto, r.ProtoMajor, r.ProtoMinor,
				r.Host, r.Close, r.ContentLength, r.TransferEncoding, body, err, header, r.Context() != nil))
		}
	}
	tl := startLane(t, summary("fast"), summary("next"))
	ref := startLane(t, summary("ref"), summary("ref"), func(s *Server) {
		s.Pick = func(*http.Request) bool { return false }
	})
	tests := []struct {
		name, req string
		mustPick  bool
	}{
		{"plain", getReq("/fast/a"), true},
		{"HEAD", reqHead("HEAD", "/fast/a"), true},
		{"query", getReq("/fast/a?x=1&y=%2F&z"), true},
		{"Connection: close", getReq("/fast/a", "Connection: close"), true},
		{"Connection: keep-alive", getReq("/fast/a", "Connection: keep-alive"), true},
		{"headers", getReq("/fast/a", "Accept: a", "accept: b", "x-lower-case: v", "User-Agent: u"), true},
		{"registry path", getReq("/fast/v2/library/alpine/manifests/sha256:0123abcd"), true},
		{"spaces around a value", getReq("/fast/a", "Accept:   a b \t"), false},
		{"escaped path", getReq("/fast/a%2Fb"), false},
		{"Pragma", getReq("/fast/a", "Pragma: no-cache"), false},
		{"Content-Length: 0", getReq("/fast/a", "Content-Length: 0"), false},
		{"bare LF", "GET /fast/a HTTP/1.1\nHost: example\n\n", false},
		{"Host with a port", "GET /fast/a HTTP/1.1\r\nHost: example:5000\r\n\r\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, _, _ := strings.Cut(tt.req, " ")
			ask := func(addr string) *http.Response {
				c := dialRaw(t, addr)
				c.send(tt.req)
				resp, _ := c.response(method)
				if got, want := resp.Header.Get("X-Remote"), c.c.LocalAddr().String(); got != want {
					t.Errorf("RemoteAddr %q, want %q", got, want)
				}
				return resp
			}
			want := ask(ref.addr)
			got := ask(tl.addr)
			if via := got.Header.Get("X-Via"); tt.mustPick && via != "fast" {
				t.Fatalf("answered by %q, want the loop", via)
			}
			if got, want := got.Header.Get("X-Summary"), want.Header.Get("X-Summary"); got != want {
				t.Errorf("handler saw\n%s\nnet/http gives\n%s", got, want)
			}
		})
	}
}

// The headers the ResponseWriter adds or drops by itself are net/http's:
// a header set to nil is not sent (as http.ResponseWriter documents), a
// 204 has no Content-Length, and a HEAD answer whose handler wrote
// nothing does not claim an empty body.
func TestAutomaticHeadersAsNetHTTP(t *testing.T) {
	tests := []struct {
		name, method string
		handler      http.HandlerFunc
		present      map[string]bool // header name: whether net/http sends it
	}{
		{"Date added", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", "1")
			io.WriteString(w, "x")
		}, map[string]bool{"Date": true, "Content-Type": true, "Content-Length": true}},
		{"Date set to nil", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Date"] = nil
			w.Header().Set("Content-Length", "1")
			io.WriteString(w, "x")
		}, map[string]bool{"Date": false, "Content-Length": true}},
		{"Content-Type set to nil", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			w.Header().Set("Content-Length", "7")
			io.WriteString(w, "<html>x")
		}, map[string]bool{"Content-Type": false, "Date": true}},
		// net/http writes the headers with the first body bytes, so it
		// sniffs them even after an explicit WriteHeader.
		{"Content-Type sniffed after WriteHeader", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "7")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "<html>x")
		}, map[string]bool{"Content-Type": true}},
		// "Changing the header map after a call to WriteHeader (or Write)
		// has no effect" (http.ResponseWriter).
		{"header set after WriteHeader", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1")
			w.WriteHeader(http.StatusOK)
			w.Header().Set("X-Late", "1")
			io.WriteString(w, "x")
		}, map[string]bool{"X-Late": false, "Content-Length": true}},
		{"204 with a Content-Length", "GET", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			w.WriteHeader(http.StatusNoContent)
		}, map[string]bool{"Content-Length": false, "Transfer-Encoding": false}},
		{"HEAD, length declared", "HEAD", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
		}, map[string]bool{"Content-Length": true}},
		{"HEAD, nothing written", "HEAD", func(w http.ResponseWriter, r *http.Request) {},
			map[string]bool{"Content-Length": false, "Transfer-Encoding": false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := startLane(t, tt.handler, tt.handler)
			ref := startLane(t, tt.handler, tt.handler, func(s *Server) {
				s.Pick = func(*http.Request) bool { return false }
			})
			for _, srv := range []struct {
				name, addr string
			}{{"net/http", ref.addr}, {"the loop", tl.addr}} {
				c := dialRaw(t, srv.addr)
				c.send(reqHead(tt.method, "/fast/x", "Connection: close"))
				answer, err := io.ReadAll(c.br)
				if err != nil {
					t.Fatalf("%s: read %q, then %v", srv.name, answer, err)
				}
				head, _, _ := strings.Cut(string(answer), "\r\n\r\n")
				for name, want := range tt.present {
					if got := strings.Contains(strings.ToLower(head), "\r\n"+strings.ToLower(name)+":"); got != want {
						t.Errorf("%s sends %s: %v, want %v (as net/http); answer %q", srv.name, name, got, want, answer)
					}
				}
			}
		})
	}
}

// The headers are those of the call to WriteHeader: a Content-Length
// changed after it does not frame the body, and the connection goes on.
func TestHeaderFixedAtWriteHeader(t *testing.T) {
	fast := routes{"/fast/late": func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", fixedDate)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "1")
		w.WriteHeader(http.StatusOK)
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "x")
	}}
	tl := startLane(t, fast, http.HandlerFunc(serveNext))
	c := dialRaw(t, tl.addr)
	c.send(getReq("/fast/late"), getReq("/fast/after"))
	c.expect("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Type: text/plain\r\nDate: " + fixedDate + "\r\n\r\nx" +
		fastAnswer("GET", "/fast/after"))
}

type baseKey struct{}

// The loop's requests have Next's BaseContext.
func TestBaseContext(t *testing.T) {
	fast := routes{"/fast/ctx": func(w http.ResponseWriter, r *http.Request) {
		v, _ := r.Context().Value(baseKey{}).(string)
		io.WriteString(w, v)
	}}
	tl := startLane(t, fast, http.HandlerFunc(serveNext), func(s *Server) {
		s.Next.BaseContext = func(net.Listener) context.Context {
			return context.WithValue(context.Background(), baseKey{}, "from BaseContext")
		}
	})
	c := dialRaw(t, tl.addr)
	c.send(getReq("/fast/ctx"))
	if _, body := c.response("GET"); body != "from BaseContext" {
		t.Errorf("the handler's context has %q, want Next's BaseContext's value", body)
	}
}

// Next's ReadHeaderTimeout and IdleTimeout close a connection of the loop
// that sends no request, or not all of one.
func TestTimeouts(t *testing.T) {
	const short = 100 * time.Millisecond
	tests := []struct {
		name      string
		configure func(*http.Server)
		send      string
	}{
		{"head unfinished, first", func(s *http.Server) { s.ReadHeaderTimeout = short }, "GET /fast/x HTTP/1.1\r\nHo"},
		{"head unfinished, after a request", func(s *http.Server) { s.ReadHeaderTimeout = short },
			getReq("/fast/a") + "GET /fast/x HTTP/1.1\r\nHo"},
		// The header timeout is longer than the test may wait, so that
		// only the idle timeout can end the wait.
		{"idle after a request", func(s *http.Server) { s.IdleTimeout, s.ReadHeaderTimeout = short, time.Minute },
			getReq("/fast/a")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := startLane(t, routes{}, http.HandlerFunc(serveNext), func(s *Server) { tt.configure(s.Next) })
			c := dialRaw(t, tl.addr)
			c.send(tt.send)
			if strings.HasPrefix(tt.send, getReq("/fast/a")) {
				c.expect(fastAnswer("GET", "/fast/a"))
			}
			c.expectEOF()
		})
	}
}

// laneWithRequestInHandler serves a lane with two connections: idle,
// after one answer, and active, whose request waits in its handler until
// release is closed.
func laneWithRequestInHandler(t *testing.T) (tl *testLane, idle, active *rawClient, release chan struct{}) {
	t.Helper()
	entered := make(chan struct{})
	release = make(chan struct{})
	fast := routes{"/fast/block": func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		serveFast(w, r)
	}}
	tl = startLane(t, fast, http.HandlerFunc(serveNext))
	idle = dialRaw(t, tl.addr)
	idle.send(getReq("/fast/ok"))
	idle.expect(fastAnswer("GET", "/fast/ok"))
	active = dialRaw(t, tl.addr)
	active.send(getReq("/fast/block"))
	waitFor(t, entered, "the handler")
	return tl, idle, active, release
}

// Shutdown closes the idle connections at once, the others after their
// answer, and returns when none is left; Serve returns
// http.ErrServerClosed once Next is shut down.
func TestShutdown(t *testing.T) {
	tl, idle, active, release := laneWithRequestInHandler(t)

	shutdownNext(t, tl.Next)
	if err := tl.serveErr(t); !isServerClosed(err) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
	if c, err := dialConn(tl.addr); err == nil {
		c.Close()
		t.Error("the listener still accepts after Next.Shutdown")
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), safety)
		defer cancel()
		shut <- tl.Shutdown(ctx)
	}()
	idle.expectEOF()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a request was in its handler", err)
	default:
	}
	close(release)
	// An answer written while the server shuts down says the connection
	// closes after it, as net/http's does.
	body := fastBody("GET", "/fast/block")
	active.expect("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " + strconv.Itoa(len(body)) +
		"\r\nContent-Type: text/plain\r\nDate: " + fixedDate + "\r\n\r\n" + body)
	active.expectEOF()
	if err := waitFor(t, shut, "Shutdown"); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// Shutdown with a context that ends first returns its error; Close then
// closes the connection left.
func TestShutdownContextEnds(t *testing.T) {
	tl, idle, active, release := laneWithRequestInHandler(t)
	t.Cleanup(func() { close(release) })

	shutdownNext(t, tl.Next)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tl.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown returned %v, want context.Canceled", err)
	}
	idle.expectEOF()
	tl.Close()
	active.expectEOF()
	if err := tl.serveErr(t); !isServerClosed(err) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
}

// Serve returns http.ErrServerClosed, and closes the listener, when Next
// was shut down or closed before it began.
func TestNextStoppedBeforeServe(t *testing.T) {
	tests := []struct {
		name string
		stop func(*testing.T, *http.Server)
	}{
		{"Shutdown", shutdownNext},
		{"Close", func(t *testing.T, s *http.Server) { s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			s := &Server{Handler: routes{}, Pick: pickFast, Next: newNext(http.HandlerFunc(serveNext)),
				Log: slog.New(slog.DiscardHandler)}
			tt.stop(t, s.Next)
			served := make(chan error, 1)
			go func() { served <- s.Serve(l) }()
			if err := waitFor(t, served, "Serve"); !isServerClosed(err) {
				t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
			}
			if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("the listener is open: Accept returned %v", err)
			}
		})
	}
}

// A flush sends what the handler wrote, the headers first, while the
// handler goes on.
func TestFlush(t *testing.T) {
	tests := []struct {
		name   string
		before func(w http.ResponseWriter) // what the handler does before its flush
		sent   string                      // the body sent by the flush
		rest   string                      // what it writes after
	}{
		{"after WriteHeader", func(w http.ResponseWriter) { w.WriteHeader(http.StatusAccepted) }, "", "rest"},
		{"before anything", func(w http.ResponseWriter) {}, "", "rest"},
		{"part of a declared body", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "8")
			io.WriteString(w, "part")
		}, "part", "rest"},
		{"part of a chunked body", func(w http.ResponseWriter) { io.WriteString(w, "part") }, "part", "rest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flushed := make(chan error, 1)
			release := make(chan struct{})
			fast := routes{"/fast/flush": func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Step", "before the flush")
				tt.before(w)
				flushed <- http.NewResponseController(w).Flush()
				<-release
				io.WriteString(w, tt.rest)
			}}
			tl := startLane(t, fast, http.HandlerFunc(serveNext))
			c := dialRaw(t, tl.addr)
			c.send(getReq("/fast/flush"))
			resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
			if err != nil {
				close(release)
				t.Fatalf("reading the flushed head: %v", err)
			}
			if err := waitFor(t, flushed, "the flush"); err != nil {
				t.Errorf("Flush: %v", err)
			}
			if resp.Header.Get("X-Step") != "before the flush" {
				t.Errorf("headers %q", resp.Header)
			}
			sent := make([]byte, len(tt.sent))
			_, err = io.ReadFull(resp.Body, sent)
			close(release)
			if err != nil || string(sent) != tt.sent {
				t.Fatalf("before the handler went on, read %q, %v; want %q", sent, err, tt.sent)
			}
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != tt.rest {
				t.Fatalf("then read %q, %v; want %q", rest, err, tt.rest)
			}
			c.send(getReq("/fast/after"))
			c.expect(fastAnswer("GET", "/fast/after"))
		})
	}
}

// Many clients at once, on raw connections and through net/http's
// client, mixing picked requests and handed-off ones.
func TestConcurrentClients(t *testing.T) {
	tl := startLane(t, routes{}, http.HandlerFunc(serveNext))
	const clients, conns, perConn = 16, 5, 10 // 50 requests per client
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	t.Cleanup(hc.CloseIdleConnections)
	var wg sync.WaitGroup
	for g := range clients {
		wg.Go(func() {
			for j := range conns {
				if err := mixedConn(tl.addr, g, j, perConn); err != nil {
					t.Errorf("client %d, connection %d: %v", g, j, err)
					return
				}
			}
		})
		wg.Go(func() {
			for i := range conns * perConn {
				if err := httpClientGet(hc, tl.addr, g, i); err != nil {
					t.Errorf("net/http client %d: %v", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// mixedConn sends n requests on a connection: picked ones, then at k, a
// request handed off and picked ones again, now Next's. Every other
// connection sends all its requests in one write.
func mixedConn(addr string, g, j, n int) error {
	c, err := dialConn(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	k := (g + j) % (n + 1) // n: no handoff
	pipelined := (g+j)%2 == 0
	var reqs []string
	var checks []func() error
	for i := range n {
		path := fmt.Sprintf("/fast/%d/%d/%d", g, j, i)
		method := "GET"
		if i%3 == 1 {
			method = "HEAD"
		}
		if i == k {
			path = strings.Replace(path, "/fast/", "/slow/", 1)
		}
		reqs = append(reqs, reqHead(method, path))
		checks = append(checks, func() error {
			if i < k {
				return expectBytes(br, fastAnswer(method, path))
			}
			resp, body, err := readResponse(br, method)
			if err != nil {
				return err
			}
			want := nextSummary(method, path, "", 0)
			if got := resp.Header.Get("X-Next"); got != want || (method == "GET" && body != want) {
				return fmt.Errorf("answer %s %q %q, want Next's to %q", resp.Status, resp.Header, body, want)
			}
			return nil
		})
	}
	if pipelined {
		if _, err := io.WriteString(c, strings.Join(reqs, "")); err != nil {
			return err
		}
	}
	for i := range n {
		if !pipelined {
			if _, err := io.WriteString(c, reqs[i]); err != nil {
				return err
			}
		}
		if err := checks[i](); err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
	}
	return nil
}

// httpClientGet asks for a picked path, or every fourth time a path Next
// answers: a picked path's answer is the loop's or, on a connection
// handed off before, Next's.
func httpClientGet(hc *http.Client, addr string, g, i int) error {
	path := fmt.Sprintf("/fast/http/%d/%d", g, i)
	if i%4 == 3 {
		path = fmt.Sprintf("/slow/http/%d/%d", g, i)
	}
	resp, err := hc.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	next := nextSummary("GET", path, "", 0)
	if string(body) != next && (strings.HasPrefix(path, "/slow/") || string(body) != fastBody("GET", path)) {
		return fmt.Errorf("GET %s: answer %s %q", path, resp.Status, body)
	}
	return nil
}
