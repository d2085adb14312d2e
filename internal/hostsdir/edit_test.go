package hostsdir

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

const testMirror = "http://127.0.0.1:5050"

// otherHosts is a hosts.toml with two mirrors of its own, comments, a
// subtable and a multi-line array, as an operator might have written it.
// The hosts command's tests use the same file.
var otherHosts = readTestdata("other-hosts.toml")

// readTestdata reads a file of testdata; the tests cannot start without it.
func readTestdata(name string) string {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		panic(err)
	}
	return string(b)
}

// FuzzMergeHosts feeds arbitrary existing files to the merge. It must not
// panic; when it succeeds, containerd must load the result with nodecache
// first, the other hosts kept in their order after it, and a second merge
// must change nothing.
func FuzzMergeHosts(f *testing.F) {
	f.Add(otherHosts)
	f.Add("")
	f.Add("server = \"https://x\"\n")
	f.Add("[host.\"http://127.0.0.1:5050\"]\n[host.\"https://a\"]\n")
	f.Add("x = \"\"\"\n# c\n\"\"\"\n# c\n[host.\"https://a\"]\r\n")
	f.Add("[[host]]\n")
	f.Add("[header]\n  a = \"b\"\n")
	f.Fuzz(func(t *testing.T, existing string) {
		merged, err := Merge([]byte(existing), testMirror)
		if err != nil {
			return
		}
		tables, err := tableHeaders(merged)
		if err != nil {
			t.Fatalf("merged file does not parse: %v\n%s", err, merged)
		}
		again, err := Merge(merged, testMirror)
		if err != nil || !bytes.Equal(again, merged) {
			t.Fatalf("second merge: %v\n%s\nthen:\n%s", err, merged, again)
		}
		rest, _ := Strip([]byte(existing), testMirror)
		before, _ := tableHeaders(rest)
		if got, want := hostNames(tables), append([]string{testMirror}, hostNames(before)...); !slices.Equal(got, want) {
			t.Fatalf("hosts %v, want %v", got, want)
		}
		if err := Check(merged, testMirror); err != nil {
			t.Fatalf("containerd does not load the merged file with nodecache first: %v\n%s", err, merged)
		}
	})
}

// hostNames returns the distinct host names of tables, in order.
func hostNames(tables []tomlTable) []string {
	var names []string
	for _, t := range tables {
		if h, ok := t.isHost(); ok && (len(names) == 0 || names[len(names)-1] != h) {
			names = append(names, h)
		}
	}
	return names
}
