package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
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

// String is the type's word in docs/operations.md's Metrics table.
func (t metricType) String() string {
	return [...]string{"counter", "gauge", "histogram"}[t]
}

// metric is what the dashboard's checks know of one exported metric: its
// type, and its labels, each with the values it takes where the set is
// fixed (nil: any value, such as a registry name or a file path).
type metric struct {
	typ    metricType
	labels map[string][]string
}

// Label values shared by several metrics.
var (
	routes = []string{"base", "manifests", "blobs", "tags", "referrers", "invalid"}
	kinds  = []string{"manifests", "blobs", "tags/list", "referrers"}
)

// knownMetrics are the metrics nodecache exports, with their types and
// labels. A dashboard query naming anything else shows an empty panel.
// A name missing from the map reads as counter, never as histogram.
// TestMetricsTableMatchesKnownMetrics keeps it equal to the table in
// docs/operations.md.
var knownMetrics = map[string]metric{
	// Requests and traffic (pkg/mirror).
	"nodecache_http_requests_total": {counter, map[string][]string{
		"route":  routes,
		"result": {"hit", "miss", "peer", "upstream", "error", "canceled"},
	}},
	"nodecache_requests_without_registry_total": {counter, nil},
	"nodecache_http_request_duration_seconds":   {histogram, map[string][]string{"route": routes}},
	"nodecache_served_bytes_total":              {counter, map[string][]string{"source": {"cache", "upstream", "peer"}}},
	"nodecache_upstream_fetch_duration_seconds": {histogram, map[string][]string{"kind": kinds}},
	"nodecache_upstream_bytes_total":            {counter, map[string][]string{"kind": kinds}},
	"nodecache_fills_in_flight":                 {gauge, nil},
	"nodecache_fill_waiters_joined_total":       {counter, nil},
	"nodecache_fills_waiting":                   {gauge, nil},
	"nodecache_fills_stopped_unread_total":      {counter, nil},
	"nodecache_tag_stale_answers_total":         {counter, nil},

	// Upstream (pkg/upstream) and containerd's configuration (internal/ctrdconf).
	"nodecache_upstream_redirects_refused_total": {counter, map[string][]string{
		"reason": {"internal_address", "https_to_http"},
	}},
	"nodecache_upstream_circuit_open": {gauge, map[string][]string{"registry": nil}},
	"nodecache_doctor_problems":       {gauge, map[string][]string{"file": nil}},

	// The store (pkg/daemon over pkg/diskstore).
	"nodecache_store_size_bytes":            {gauge, nil},
	"nodecache_store_reserved_bytes":        {gauge, nil},
	"nodecache_store_max_size_bytes":        {gauge, nil},
	"nodecache_store_entries":               {gauge, nil},
	"nodecache_store_loading":               {gauge, nil},
	"nodecache_store_evictions_total":       {counter, nil},
	"nodecache_store_expirations_total":     {counter, nil},
	"nodecache_store_uncached_fills_total":  {counter, nil},
	"nodecache_store_corrupt_entries_total": {counter, nil},
	"nodecache_store_scrubbed_bytes_total":  {counter, nil},

	// Pins (pkg/pin) and the log (pkg/daemon).
	"nodecache_pin_images":              {gauge, nil},
	"nodecache_pinned_bytes":            {gauge, nil},
	"nodecache_pins_over_max_size":      {gauge, nil},
	"nodecache_pin_failed_images":       {gauge, nil},
	"nodecache_pin_missing_blobs":       {gauge, nil},
	"nodecache_log_lines_dropped_total": {counter, nil},

	// Peers (pkg/peer).
	"nodecache_peers":                         {gauge, map[string][]string{"state": {"healthy", "bad"}}},
	"nodecache_peer_membership_changes_total": {counter, nil},
	"nodecache_peer_fetches_total": {counter, map[string][]string{
		"result": {"ok", "error", "corrupt", "refused"},
	}},
	"nodecache_peer_requests_total": {counter, map[string][]string{
		"result": {"served", "unauthorized", "denied", "invalid"},
	}},
	"nodecache_peer_streams":         {gauge, nil},
	"nodecache_peer_redirects_total": {counter, nil},
}

// targetLabels are the labels Prometheus gives every series it scrapes.
var targetLabels = []string{"instance", "job"}

// rateFuncs are the functions whose argument is a counter's range.
var rateFuncs = []string{"rate", "irate", "increase"}

var (
	metricName = regexp.MustCompile(`nodecache_[a-z_]+`)
	// selector is a series name with its label matchers and its range,
	// each if present.
	selector = regexp.MustCompile(`(nodecache_[a-z_]+)\s*(?:\{([^}]*)\})?\s*(\[[^\]]*\])?`)
	matcher  = regexp.MustCompile(`\b([a-z_]+)\s*(?:=~|!~|=|!=)\s*"([^"]*)"`)
	grouping = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	// callee is the function whose argument list a prefix of a query opens
	// last: "rate(" yes, "sum by (x) (" no.
	callee      = regexp.MustCompile(`([a-z_]+)\s*\(\s*$`)
	placeholder = regexp.MustCompile(`\{\{\s*([a-z_]+)\s*\}\}`)
)

// baseName maps a histogram's _bucket, _sum and _count series to the
// histogram's name; other names are returned as they are.
func baseName(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && knownMetrics[base].typ == histogram {
			return base
		}
	}
	return name
}

// checkMetricName returns why name is not a series nodecache exports, or "".
func checkMetricName(name string) string {
	base := baseName(name)
	m, ok := knownMetrics[base]
	switch {
	case !ok:
		return "not a metric nodecache exports"
	case m.typ == histogram && base == name:
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

// seriesLabels returns the labels the series of expr carry: their own,
// the target labels, and le for a histogram's buckets.
func seriesLabels(expr string) []string {
	labels := slices.Clone(targetLabels)
	for _, name := range metricName.FindAllString(expr, -1) {
		base := baseName(name)
		labels = slices.AppendSeq(labels, maps.Keys(knownMetrics[base].labels))
		if base != name && strings.HasSuffix(name, "_bucket") {
			labels = append(labels, "le")
		}
	}
	return labels
}

// resultLabels returns the labels the answer to expr may carry: those it
// groups by, or, where it does not group, those of its series.
func resultLabels(expr string) []string {
	var labels []string
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			labels = append(labels, strings.TrimSpace(l))
		}
	}
	if labels == nil {
		return seriesLabels(expr)
	}
	return labels
}

// checkQuery returns what is wrong with a dashboard query: a series
// nodecache does not export, a label its series does not have or a value
// the label does not take, a counter read other than through rate or
// increase, a gauge read through them, histogram_quantile over anything
// but buckets, grouping by a label none of its series has.
func checkQuery(expr string) []string {
	var probs []string
	quantile := strings.Contains(expr, "histogram_quantile(")
	for _, m := range selector.FindAllStringSubmatchIndex(expr, -1) {
		name := expr[m[2]:m[3]]
		if why := checkMetricName(name); why != "" {
			probs = append(probs, name+": "+why)
			continue
		}
		base := baseName(name)
		if quantile && (base == name || !strings.HasSuffix(name, "_bucket")) {
			probs = append(probs, name+": histogram_quantile needs a histogram's _bucket series")
		}
		if m[4] >= 0 {
			probs = append(probs, checkMatchers(base, expr[m[4]:m[5]])...)
		}
		fn := ""
		if c := callee.FindStringSubmatch(expr[:m[0]]); c != nil {
			fn = c[1]
		}
		counterLike := knownMetrics[base].typ == counter || base != name
		switch underRate := m[6] >= 0 && slices.Contains(rateFuncs, fn); {
		case counterLike && !underRate:
			probs = append(probs, name+": a counter is read through rate, irate or increase of a range")
		case !counterLike && slices.Contains(rateFuncs, fn):
			probs = append(probs, name+": a gauge is not read through "+fn)
		}
	}
	labels := seriesLabels(expr)
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); !slices.Contains(labels, l) {
				probs = append(probs, "grouped by "+l+", a label none of the query's series has")
			}
		}
	}
	return probs
}

// checkMatchers checks the label matchers of one series of the metric
// name. A regular expression such as ".*" on a label with a fixed set of
// values is reported too: the dashboard names values.
func checkMatchers(name, matchers string) []string {
	var probs []string
	for _, m := range matcher.FindAllStringSubmatch(matchers, -1) {
		label, value := m[1], m[2]
		if slices.Contains(targetLabels, label) {
			continue
		}
		allowed, ok := knownMetrics[name].labels[label]
		if !ok {
			probs = append(probs, fmt.Sprintf("%s has no label %s", name, label))
			continue
		}
		for v := range strings.SplitSeq(value, "|") {
			if allowed != nil && !slices.Contains(allowed, v) {
				probs = append(probs, fmt.Sprintf("%s: %s=%q: %q is not one of %q", name, label, value, v, allowed))
			}
		}
	}
	return probs
}

func TestCheckQuery(t *testing.T) {
	for expr, wantOK := range map[string]bool{
		`sum by (route) (rate(nodecache_http_requests_total{instance=~"$instance", result="error"}[$__rate_interval]))`: true,
		`histogram_quantile(0.99, sum by (le, kind) (rate(nodecache_upstream_fetch_duration_seconds_bucket[5m])))`:      true,
		`count(max by (registry) (nodecache_upstream_circuit_open) > 0) or vector(0)`:                                   true,
		`sum(increase(nodecache_store_corrupt_entries_total{instance=~"$instance"}[$__range]))`:                         true,
		`sum by (state) (nodecache_peers{state="bad"})`:                                                                 true,
		`label_values(nodecache_store_size_bytes, instance)`:                                                            true,
		`sum(nodecache_http_requests_total)`:                                                                            false, // a counter's raw value
		`rate(nodecache_fills_waiting[5m])`:                                                                             false, // rate of a gauge
		`rate(nodecache_peer_fetches_total{result="served"}[5m])`:                                                       false, // a peer request result
		`rate(nodecache_peer_requests_total{result="hit"}[5m])`:                                                         false, // a request result
		`rate(nodecache_served_bytes_total{route="blobs"}[5m])`:                                                         false, // no such label
		`sum by (route) (rate(nodecache_served_bytes_total[5m]))`:                                                       false, // nor here
		`histogram_quantile(0.5, sum by (le) (rate(nodecache_http_requests_total[5m])))`:                                false,
		`rate(nodecache_http_request_duration_seconds[5m])`:                                                             false,
		`sum by (instance) (nodecache_peer_stream{instance=~"$instance"})`:                                              false,
	} {
		probs := checkQuery(expr)
		if got := len(probs) == 0; got != wantOK {
			t.Errorf("checkQuery(%q) = %q, want ok = %v", expr, probs, wantOK)
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

// gridWidth is the width of a Grafana dashboard in grid columns.
const gridWidth = 24

type gridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

type dashPanel struct {
	ID         int     `json:"id"`
	Type       string  `json:"type"`
	Title      string  `json:"title"`
	GridPos    gridPos `json:"gridPos"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
		Datasource   *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
}

// checkGrid returns what is wrong with the panels' places: a panel
// outside the grid, a row that is not a full-width line, two panels on
// the same cell.
func checkGrid(panels []dashPanel) []string {
	var probs []string
	for i, p := range panels {
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > gridWidth {
			probs = append(probs, fmt.Sprintf("panel %q at %+v is outside the %d-column grid", p.Title, g, gridWidth))
		}
		if p.Type == "row" && (g.X != 0 || g.W != gridWidth || g.H != 1) {
			probs = append(probs, fmt.Sprintf("row %q at %+v is not one full-width line", p.Title, g))
		}
		for _, q := range panels[:i] {
			o := q.GridPos
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				probs = append(probs, fmt.Sprintf("panels %q %+v and %q %+v overlap", q.Title, o, p.Title, g))
			}
		}
	}
	return probs
}

func TestCheckGrid(t *testing.T) {
	panel := func(typ string, x, y, w, h int) dashPanel {
		return dashPanel{Type: typ, Title: fmt.Sprint(x, y, w, h), GridPos: gridPos{H: h, W: w, X: x, Y: y}}
	}
	for _, c := range []struct {
		panels []dashPanel
		wantOK bool
	}{
		{[]dashPanel{panel("row", 0, 0, 24, 1), panel("stat", 0, 1, 12, 8), panel("stat", 12, 1, 12, 8)}, true},
		{[]dashPanel{panel("stat", 0, 0, 12, 8), panel("stat", 11, 7, 4, 4)}, false},
		{[]dashPanel{panel("stat", 16, 0, 12, 8)}, false},
		{[]dashPanel{panel("row", 0, 0, 12, 1)}, false},
		{[]dashPanel{panel("stat", 0, 0, 0, 8)}, false},
	} {
		probs := checkGrid(c.panels)
		if got := len(probs) == 0; got != c.wantOK {
			t.Errorf("checkGrid(%+v) = %q, want ok = %v", c.panels, probs, c.wantOK)
		}
	}
}

type dashboard struct {
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

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var dash dashboard
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
	for _, p := range checkGrid(dash.Panels) {
		t.Error(p)
	}
	checkPanels(t, dash.Panels)

	exprs := queries(raw)
	if len(exprs) == 0 {
		t.Fatal("no queries found")
	}
	used := map[string]bool{}
	for _, e := range exprs {
		if !balanced(e) {
			t.Errorf("unbalanced brackets in %q", e)
		}
		for _, p := range checkQuery(e) {
			t.Errorf("%s (in %q)", p, e)
		}
		for _, name := range metricName.FindAllString(e, -1) {
			used[baseName(name)] = true
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

// checkPanels checks each panel's ids, data source and queries, and that
// every {{label}} of a legend is one its query's answer carries.
func checkPanels(t *testing.T, panels []dashPanel) {
	t.Helper()
	ids := map[int]string{}
	for _, p := range panels {
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
			for _, m := range placeholder.FindAllStringSubmatch(q.LegendFormat, -1) {
				if !slices.Contains(resultLabels(q.Expr), m[1]) {
					t.Errorf("panel %q: legend %q names %s, which %q does not keep", p.Title, q.LegendFormat, m[1], q.Expr)
				}
			}
		}
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

var (
	// tableLabel is a label in the Metrics table, with its values if the
	// table lists them: "`route` (base, manifests)".
	tableLabel = regexp.MustCompile("`([a-z_]+)`(?:\\s*\\(([^)]*)\\))?")
	tableName  = regexp.MustCompile("`(nodecache_[a-z_]+)`")
)

// TestMetricsTableMatchesKnownMetrics: docs/operations.md's Metrics table
// and knownMetrics name the same metrics, with the same types and labels,
// and the label values the table lists are those knownMetrics checks the
// dashboard against. So a metric added to the table must be added here,
// and then TestDashboard asks for a panel that shows it.
func TestMetricsTableMatchesKnownMetrics(t *testing.T) {
	data, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Metrics\n")
	if !ok {
		t.Fatal("docs/operations.md has no Metrics section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	documented := map[string]bool{}
	for line := range strings.SplitSeq(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !tableName.MatchString(cells[1]) {
			continue
		}
		typ, labels := strings.TrimSpace(cells[2]), tableLabel.FindAllStringSubmatch(cells[3], -1)
		for _, m := range tableName.FindAllStringSubmatch(cells[1], -1) {
			documented[m[1]] = true
			for _, p := range checkTableRow(m[1], typ, labels) {
				t.Errorf("docs/operations.md: %s", p)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(knownMetrics)) {
		if !documented[name] {
			t.Errorf("%s is in knownMetrics but not in docs/operations.md's Metrics table", name)
		}
	}
}

// checkTableRow compares one metric of the Metrics table, its type and
// its labels (each with the values the table lists, if any), to
// knownMetrics.
func checkTableRow(name, typ string, labels [][]string) []string {
	known, ok := knownMetrics[name]
	if !ok {
		return []string{name + " is not in knownMetrics"}
	}
	var probs []string
	if typ != known.typ.String() {
		probs = append(probs, fmt.Sprintf("%s is a %s, knownMetrics says %s", name, typ, known.typ))
	}
	var names []string
	for _, l := range labels {
		names = append(names, l[1])
		allowed := known.labels[l[1]]
		if l[2] == "" || allowed == nil {
			continue
		}
		values := strings.Split(l[2], ", ")
		if !slices.Equal(slices.Sorted(slices.Values(values)), slices.Sorted(slices.Values(allowed))) {
			probs = append(probs, fmt.Sprintf("%s: %s takes %q, knownMetrics says %q", name, l[1], values, allowed))
		}
	}
	if want := slices.Sorted(maps.Keys(known.labels)); !slices.Equal(slices.Sorted(slices.Values(names)), want) {
		probs = append(probs, fmt.Sprintf("%s has labels %q, knownMetrics says %q", name, names, want))
	}
	return probs
}
