package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

type metricType int

const (
	counter metricType = iota
	gauge
	histogram
)

// knownMetrics are the metrics nodecache exports, with their types.
// A dashboard query naming anything else shows an empty panel.
// A name missing from the map reads as counter, never as histogram.
var knownMetrics = map[string]metricType{
	"nodecache_http_requests_total":             counter,
	"nodecache_http_request_duration_seconds":   histogram,
	"nodecache_served_bytes_total":              counter,
	"nodecache_upstream_fetch_duration_seconds": histogram,
	"nodecache_upstream_bytes_total":            counter,
	"nodecache_fills_in_flight":                 gauge,
	"nodecache_fill_waiters_joined_total":       counter,
	"nodecache_store_size_bytes":                gauge,
	"nodecache_store_max_size_bytes":            gauge,
	"nodecache_store_entries":                   gauge,
	"nodecache_store_evictions_total":           counter,
	"nodecache_store_expirations_total":         counter,
	"nodecache_tag_stale_answers_total":         counter,
	"nodecache_peers":                           gauge,
	"nodecache_peer_fetches_total":              counter,
}

// knownLabelValues are the values of the labels that have a fixed set.
// peer_fetches_total's result label is left out: its values are not
// fixed, and it shares the name with the request result.
var knownLabelValues = map[string][]string{
	"route":  {"base", "manifests", "blobs", "tags", "referrers", "invalid"},
	"result": {"hit", "miss", "peer", "upstream", "error"},
	"source": {"cache", "upstream", "peer"},
	"kind":   {"manifests", "blobs", "tags/list", "referrers"},
	"state":  {"healthy", "bad"},
}

var metricName = regexp.MustCompile(`nodecache_[a-z_]+`)

// baseName maps a histogram's _bucket, _sum and _count series to the
// histogram's name; other names are returned as they are.
func baseName(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && knownMetrics[base] == histogram {
			return base
		}
	}
	return name
}

// checkMetricName returns why name is not a series nodecache exports, or "".
func checkMetricName(name string) string {
	base := baseName(name)
	typ, ok := knownMetrics[base]
	switch {
	case !ok:
		return "not a metric nodecache exports"
	case typ == histogram && base == name:
		return "a histogram has no series of its bare name; use _bucket, _sum or _count"
	}
	return ""
}

func TestCheckMetricName(t *testing.T) {
	for name, wantOK := range map[string]bool{
		"nodecache_http_requests_total":                   true,
		"nodecache_http_request_duration_seconds_bucket":  true,
		"nodecache_upstream_fetch_duration_seconds_count": true,
		"nodecache_http_request_duration_seconds":         false,
		"nodecache_http_requests_total_bucket":            false,
		"nodecache_http_request_total":                    false,
		"nodecache_store_size":                            false,
	} {
		if got := checkMetricName(name) == ""; got != wantOK {
			t.Errorf("checkMetricName(%q) ok = %v, want %v", name, got, wantOK)
		}
	}
}

// queries walks the dashboard and returns every PromQL expression in it:
// panel targets and query variables.
func queries(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if s, ok := child.(string); ok && (k == "expr" || k == "query" || k == "definition") {
				out = append(out, s)
				continue
			}
			out = append(out, queries(child)...)
		}
	case []any:
		for _, child := range v {
			out = append(out, queries(child)...)
		}
	}
	return out
}

type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr       string `json:"expr"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
}

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var dash struct {
		SchemaVersion int         `json:"schemaVersion"`
		Panels        []dashPanel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if dash.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d predates datasource references by uid (36)", dash.SchemaVersion)
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query any    `json:"query"`
	}) bool {
		return v.Name == "DS_PROMETHEUS" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Error("no Prometheus datasource variable DS_PROMETHEUS")
	}

	ids := map[int]string{}
	for _, p := range dash.Panels {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q does not use ${DS_PROMETHEUS}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if q.Datasource == nil || q.Datasource.UID != "${DS_PROMETHEUS}" || q.Expr == "" {
				t.Errorf("panel %q has a query without ${DS_PROMETHEUS} or expr", p.Title)
			}
		}
	}

	exprs := queries(raw)
	if len(exprs) == 0 {
		t.Fatal("no queries found")
	}
	used := map[string]bool{}
	label := regexp.MustCompile(`\b([a-z_]+)\s*(?:=~|!~|=|!=)\s*"([^"]*)"`)
	for _, e := range exprs {
		if !balanced(e) {
			t.Errorf("unbalanced brackets in %q", e)
		}
		for _, name := range metricName.FindAllString(e, -1) {
			if why := checkMetricName(name); why != "" {
				t.Errorf("%s: %s (in %q)", name, why, e)
			}
			used[baseName(name)] = true
		}
		if strings.Contains(e, "nodecache_peer_fetches_total") {
			continue
		}
		for _, m := range label.FindAllStringSubmatch(e, -1) {
			allowed, fixed := knownLabelValues[m[1]]
			if !fixed {
				continue
			}
			for _, v := range strings.Split(m[2], "|") {
				if !slices.Contains(allowed, v) {
					t.Errorf("label %s=%q: %q is not one of %q (in %q)", m[1], m[2], v, allowed, e)
				}
			}
		}
	}
	for name := range knownMetrics {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
	if !slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, "process_resident_memory_bytes") }) {
		t.Error("no panel shows process RSS")
	}
}

// balanced reports whether the (), {} and [] of a query pair up, outside
// of quoted strings.
func balanced(expr string) bool {
	var stack []rune
	pair := map[rune]rune{')': '(', '}': '{', ']': '['}
	inQuote := false
	for _, r := range expr {
		switch {
		case r == '"':
			inQuote = !inQuote
		case inQuote:
		case r == '(' || r == '{' || r == '[':
			stack = append(stack, r)
		case pair[r] != 0:
			if len(stack) == 0 || stack[len(stack)-1] != pair[r] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0 && !inQuote
}
