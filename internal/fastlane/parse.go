package fastlane

import (
	"bytes"
	"context"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// parseHead reads a request head the loop may answer: a subset of what
// net/http's server accepts, read as it reads it (FuzzParseHead checks
// every head accepted here against http.ReadRequest and the server's own
// checks). It returns nil for anything else, which then goes to net/http
// as it is:
//   - the request line "GET|HEAD SP target SP HTTP/1.1", the target in
//     origin form (from "/"), its path of the characters a URL path
//     carries unescaped (a registry path's are among them), so that
//     URL.Path is the path as sent, its query of visible ASCII without
//     '#';
//   - header lines "Name: value", every line ending in CRLF, names of
//     token characters, values of visible ASCII, space and tab;
//   - exactly one valid Host, which moves to Request.Host as net/http
//     moves it;
//   - no Content-Length, Transfer-Encoding, Expect, Upgrade or Pragma (the
//     one header ReadRequest rewrites), and a Connection that is "close"
//     or "keep-alive", if any.
//
// head ends with the empty line (headEnd). The request has ctx.
func parseHead(ctx context.Context, head []byte) *http.Request {
	line, rest, ok := cutLine(head)
	if !ok {
		return nil
	}
	method, target, ok := requestLine(line)
	if !ok {
		return nil
	}
	path, query, _ := strings.Cut(target, "?")
	r := http.Request{
		Method: method, URL: &url.URL{Path: path, RawQuery: query}, RequestURI: target,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: make(http.Header, 8), Body: http.NoBody,
	}
	hosts := 0
	for {
		if line, rest, ok = cutLine(rest); !ok {
			return nil
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := headerLine(line)
		if !ok {
			return nil
		}
		switch name {
		case "Host":
			if hosts++; hosts > 1 || value == "" || !httpguts.ValidHostHeader(value) {
				return nil
			}
			r.Host = value
			continue
		case "Connection":
			switch {
			case strings.EqualFold(value, "close"):
				r.Close = true
			case !strings.EqualFold(value, "keep-alive"):
				return nil
			}
		case "Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Pragma":
			return nil
		}
		r.Header[name] = append(r.Header[name], value)
	}
	if hosts != 1 || len(rest) != 0 {
		return nil
	}
	return r.WithContext(ctx)
}

// cutLine cuts the CRLF-ended line at the start of b.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

// requestLine returns the method and target of a request line the loop
// takes.
func requestLine(line []byte) (method, target string, ok bool) {
	var rest []byte
	switch {
	case bytes.HasPrefix(line, []byte("GET /")):
		method, rest = http.MethodGet, line[len("GET "):]
	case bytes.HasPrefix(line, []byte("HEAD /")):
		method, rest = http.MethodHead, line[len("HEAD "):]
	default:
		return "", "", false
	}
	t, ok := bytes.CutSuffix(rest, []byte(" HTTP/1.1"))
	if !ok || t[len(t)-1] == '?' { // url.Parse sets ForceQuery for a lone '?'
		return "", "", false
	}
	path, query, _ := bytes.Cut(t, []byte("?"))
	for _, c := range path {
		if !pathByte[c] {
			return "", "", false
		}
	}
	for _, c := range query {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return "", "", false
		}
	}
	return method, string(t), true
}

// pathByte holds the bytes url.URL.EscapedPath leaves as they are:
// unreserved characters and "$&+,/:;=@".
var pathByte = func() (t [256]bool) {
	for _, c := range []byte("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~$&+,/:;=@") {
		t[c] = true
	}
	return t
}()

// headerLine splits a header line into its canonical name and its value
// without the spaces and tabs around it.
func headerLine(line []byte) (name, value string, ok bool) {
	i := bytes.IndexByte(line, ':')
	if i < 1 {
		return "", "", false
	}
	for _, c := range line[:i] {
		if !httpguts.IsTokenRune(rune(c)) {
			return "", "", false
		}
	}
	v := line[i+1:]
	for _, c := range v {
		if (c < ' ' && c != '\t') || c >= 0x7f {
			return "", "", false
		}
	}
	return canonicalName(line[:i]), string(bytes.Trim(v, " \t")), true
}

// canonicalName is textproto.CanonicalMIMEHeaderKey of a token, without
// allocating for the names registry clients send as they are canonical.
func canonicalName(b []byte) string {
	switch string(b) {
	case "Host":
		return "Host"
	case "Accept":
		return "Accept"
	case "Accept-Encoding":
		return "Accept-Encoding"
	case "User-Agent":
		return "User-Agent"
	case "Authorization":
		return "Authorization"
	case "Connection":
		return "Connection"
	case "Range":
		return "Range"
	}
	return textproto.CanonicalMIMEHeaderKey(string(b))
}
