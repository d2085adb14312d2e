package hostsdir

// The text of hosts.toml files: a new one, and nodecache's host table
// merged into or taken out of an existing one by editing the text, so the
// other hosts and the comments stay as they were.

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Fresh is the hosts.toml for a registry without one. server is the
// upstream endpoint; empty for _default, where containerd falls back to the
// registry being pulled from.
func Fresh(server, mirror string) []byte {
	var b strings.Builder
	b.WriteString(Marker + "; `nodecache hosts --remove` deletes it.\n")
	b.WriteString("# containerd tries the [host] tables in order, then the registry itself,\n")
	b.WriteString("# so a node never depends on its cache to pull.\n\n")
	if server != "" {
		b.WriteString("server = " + tomlString(server) + "\n\n")
	} else {
		b.WriteString("# No server: the fallback is the registry named in the image reference.\n\n")
	}
	b.WriteString(MirrorTable(mirror))
	return []byte(b.String())
}

// MirrorTable is nodecache's host table. It never carries TLS options: on a
// plain-http host, containerd would take ca or skip_verify as a reason to
// try HTTPS first.
func MirrorTable(mirror string) string {
	return "[host." + tomlString(mirror) + "]\n" +
		"  # nodecache, tried first; it serves pulls only.\n" +
		"  capabilities = [\"pull\", \"resolve\"]\n"
}

// ErrCannotMerge is returned when an existing hosts.toml cannot take
// nodecache's host table; Write with replace is the way out.
var ErrCannotMerge = errors.New("cannot add nodecache's host to it; fix it or use --replace")

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// tomlTable is the header of a [table] or [[array table]] in a file.
type tomlTable struct {
	// start is the offset of the line that holds the header, or of the
	// comment lines right above it, which describe it.
	start int
	key   []string // the header's dotted key, unquoted
}

// isHost reports whether the table is a host or one of its subtables, and
// which host.
func (t tomlTable) isHost() (string, bool) {
	if len(t.key) >= 2 && t.key[0] == "host" {
		return t.key[1], true
	}
	return "", false
}

// tableHeaders parses b and returns its table headers in file order. TOML
// puts every header on a line of its own, so the lines from one table's
// start to the next one's belong to the first.
func tableHeaders(b []byte) ([]tomlTable, error) {
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("not valid TOML: %w", err)
	}
	var p unstable.Parser
	p.Reset(b)
	var tables []tomlTable
	prevEnd := 0 // where the last expression ended
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table && e.Kind != unstable.ArrayTable && e.Kind != unstable.KeyValue {
			continue
		}
		t := tomlTable{start: -1}
		end := 0
		for it := e.Key(); it.Next(); {
			n := it.Node()
			if t.start < 0 {
				t.start = lineStart(b, int(n.Raw.Offset))
			}
			t.key = append(t.key, string(n.Data))
			end = int(n.Raw.Offset + n.Raw.Length)
		}
		if e.Kind == unstable.KeyValue {
			prevEnd = int(e.Raw.Offset + e.Raw.Length)
			continue
		}
		t.start = commentsAbove(b, t.start, prevEnd)
		prevEnd = end
		tables = append(tables, t)
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("not valid TOML: %w", err)
	}
	return tables, nil
}

// lineStart returns the offset of the line that holds offset i.
func lineStart(b []byte, i int) int {
	return bytes.LastIndexByte(b[:i], '\n') + 1
}

// commentsAbove moves start, the start of a header line, up over the
// comment lines right above it, staying on lines after the one where the
// previous expression ended (a multi-line string may hold a '#').
func commentsAbove(b []byte, start, prevEnd int) int {
	limit := 0
	if prevEnd > 0 {
		limit = len(b)
		if i := bytes.IndexByte(b[prevEnd:], '\n'); i >= 0 {
			limit = prevEnd + i + 1
		}
	}
	for start > limit {
		above := lineStart(b, start-1)
		if above < limit || !bytes.HasPrefix(bytes.TrimSpace(b[above:start]), []byte("#")) {
			break
		}
		start = above
	}
	return start
}

// hasHostTables reports whether b, valid TOML, has any [host."..."] table.
func hasHostTables(b []byte) bool {
	tables, _ := tableHeaders(b)
	for _, t := range tables {
		if _, ok := t.isHost(); ok {
			return true
		}
	}
	return false
}

// Strip returns b without mirror's host table and its subtables.
// Everything else, comments included, is kept byte for byte.
func Strip(b []byte, mirror string) ([]byte, error) {
	tables, err := tableHeaders(b)
	if err != nil {
		return nil, err
	}
	var out []byte
	last := 0
	for i, t := range tables {
		if host, ok := t.isHost(); !ok || host != mirror {
			continue
		}
		end := len(b)
		if i+1 < len(tables) {
			end = tables[i+1].start
		}
		out = append(out, b[last:t.start]...)
		last = end
	}
	if last == 0 {
		return b, nil
	}
	out = append(out, b[last:]...)
	if last == len(b) {
		// The table was at the end: drop the blank line that set it off.
		out = bytes.TrimRight(out, " \t\r\n")
		if len(out) > 0 {
			out = append(out, '\n')
		}
	}
	return out, nil
}

// Merge returns b with mirror's host table placed before every other
// host table, so containerd tries nodecache first and the other hosts, then
// the server, after it. An existing table for mirror is replaced.
func Merge(b []byte, mirror string) ([]byte, error) {
	rest, err := Strip(b, mirror)
	if err != nil {
		return nil, err
	}
	tables, err := tableHeaders(rest)
	if err != nil {
		return nil, err
	}
	table := MirrorTable(mirror)
	var out []byte
	for _, t := range tables {
		if _, ok := t.isHost(); ok {
			out = append(out, rest[:t.start]...)
			out = append(out, table+"\n"...)
			out = append(out, rest[t.start:]...)
			break
		}
	}
	if out == nil {
		out = bytes.TrimRight(rest, " \t\r\n")
		if len(out) > 0 {
			out = append(out, "\n\n"...)
		}
		out = append(out, table...)
	}
	// A host table given inline clashes with the new [host."..."] table,
	// and containerd ignores a file it cannot decode (an array of host
	// tables, an unknown capability).
	if err := Check(out, mirror); err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrCannotMerge, err)
	}
	return out, nil
}
