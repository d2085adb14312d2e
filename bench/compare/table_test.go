//go:build benchcompare

package compare

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// measure is one figure of a workload, taken for each contender in each
// repetition.
type measure struct {
	title        string
	unit         string
	higherBetter bool
	// limit, if not 0, is the limit itself (upstream bytes: 1x); else it
	// is the contender whose role is roleLimit.
	limit     float64
	limitName string
	values    map[string][]float64 // contender name -> one per repetition
	order     []string             // contender names, in the order first seen
	roles     map[string]string
}

func newMeasure(title, unit string, higherBetter bool) *measure {
	return &measure{title: title, unit: unit, higherBetter: higherBetter,
		values: map[string][]float64{}, roles: map[string]string{}}
}

func (m *measure) add(c *contender, v float64) {
	if _, ok := m.values[c.name]; !ok {
		m.order = append(m.order, c.name)
		m.roles[c.name] = c.role
	}
	m.values[c.name] = append(m.values[c.name], v)
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// best returns the best median among the contenders of role, and its
// name; "" if there is none.
func (m *measure) best(role string) (float64, string) {
	var v float64
	name := ""
	for _, n := range m.order {
		if m.roles[n] != role {
			continue
		}
		x := median(m.values[n])
		if name == "" || (m.higherBetter && x > v) || (!m.higherBetter && x < v) {
			v, name = x, n
		}
	}
	return v, name
}

// limitValue is the limit this measure is held to, and what it is.
func (m *measure) limitValue() (float64, string) {
	if m.limit != 0 {
		return m.limit, m.limitName
	}
	return m.best(roleLimit)
}

// print writes the measure as a Markdown table: each contender's
// repetitions, median, and ratios to the limit and to the best peer.
func (m *measure) print(w io.Writer) {
	better := "lower is better"
	if m.higherBetter {
		better = "higher is better"
	}
	fmt.Fprintf(w, "\n**%s** (%s; %s)\n\n", m.title, m.unit, better)
	fmt.Fprintln(w, "| contender | runs | median | ÷ limit | ÷ best peer |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	limit, limitName := m.limitValue()
	peer, peerName := m.best(rolePeer)
	for _, n := range m.order {
		runs := make([]string, len(m.values[n]))
		for i, v := range m.values[n] {
			runs[i] = num(v)
		}
		med := median(m.values[n])
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", n, strings.Join(runs, " "), num(med), ratio(med, limit), ratio(med, peer))
	}
	fmt.Fprintf(w, "\nlimit: %s; best peer: %s\n", limitName, peerName)
}

// summary is one line of the summary table: nodecache's median against
// the best peer and the limit.
func (m *measure) summary(w io.Writer) {
	self, _ := m.best(roleSelf)
	peer, peerName := m.best(rolePeer)
	limit, limitName := m.limitValue()
	peerCell, limitCell := "–", "–"
	if peerName != "" {
		peerCell = num(peer) + " (" + peerName + ")"
	}
	if limitName != "" {
		limitCell = num(limit) + " (" + limitName + ")"
	}
	fmt.Fprintf(w, "| %s, %s | %s | %s | %s | %s | %s |\n", m.title, m.unit, num(self), peerCell, limitCell,
		ratio(self, limit), ratio(self, peer))
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func ratio(v, of float64) string {
	if of == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v/of)
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
