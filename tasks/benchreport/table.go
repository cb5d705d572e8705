package benchreport

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A Row is one benchmark's line of the table scripts/bench prints: its
// figure, the baselines measured next to it, their ratios, the target and
// whether it was met.
type Row struct {
	Name     string
	Unit     string
	Figure   float64
	Baseline float64
	Ratio    float64 // figure / baseline
	// Floor and FloorRatio are the second baseline, when the benchmark
	// has one (base2-<unit> and x-base2).
	Floor      float64
	FloorRatio float64
	// Extra are the other figures reported (p50-ms, p99-ms, …).
	Extra map[string]float64
}

// A Target is what a benchmark must reach.
type Target struct {
	// MaxRatio, when set, bounds the ratio from above (a time against its
	// baseline's); MinRatio from below (a rate against its baseline's).
	MaxRatio, MinRatio float64
	// MinFloorRatio bounds the ratio to the second baseline from below.
	MinFloorRatio float64
	// MinFigure bounds the figure from below (a rate).
	MinFigure float64
	// MaxP99 bounds the p99 latency (p99-ms) from above, in milliseconds.
	MaxP99 float64
}

// targets are the targets of the benchmarks, by the prefix of their name;
// the first prefix that matches wins.
var targets = []struct {
	prefix string
	target Target
}{
	{"BenchmarkSweep/", Target{MaxRatio: 1.5}},
	{"BenchmarkCriteriaSweep/", Target{MaxRatio: 1.5}},
	{"BenchmarkDateJoins", Target{MaxRatio: 1.5}},
	{"BenchmarkDwellPass", Target{MaxRatio: 1.5}},
	{"BenchmarkBackfill/", Target{MaxRatio: 1.5}},
	{"BenchmarkFunnel/", Target{MinRatio: 0.8, MinFigure: 20000}},
	{"BenchmarkFunnelAtScale/", Target{MinRatio: 0.9, MinFigure: 20000}},
	{"BenchmarkDispatch", Target{MinRatio: 0.9}},
	{"BenchmarkIngestBatch/batch", Target{MinRatio: 20, MinFigure: 2000}},
	{"BenchmarkIngestBatch/", Target{}},
	{"BenchmarkIngestAtHalfRate", Target{MaxP99: 1000}},
	{"BenchmarkIngestMetrics", Target{MinRatio: 0.97}},
	// An ingest whose join cascades into a dependent makes two
	// transitions: at most twice the time of one that makes one.
	{"BenchmarkIngestCascade", Target{MaxRatio: 2}},
	{"BenchmarkIngest", Target{MinRatio: 0.7, MinFloorRatio: 0.9}},
	{"BenchmarkCompositeSweep", Target{MinFigure: 2000}},
	{"BenchmarkWebhookDelivery/drain", Target{MinRatio: 0.8}},
	{"BenchmarkWebhookDelivery/steady", Target{MaxP99: 1000}},
	{"BenchmarkScrape", Target{MaxRatio: 1}},
	// A sweep whose every leave cascades into a second bucket does twice
	// the transitions: at most twice the time.
	{"BenchmarkCascade", Target{MaxRatio: 2}},
	// Fanned out to three replicas against one run, one bucket at a time.
	// Where the replicas share Postgres's cores, as on one machine, the
	// work is the same either way: the target bounds what the fan-out
	// costs.
	{"BenchmarkSweepFanOut", Target{MaxRatio: 1.1}},
}

// TargetOf returns the target of the benchmark.
func TargetOf(name string) Target {
	for _, t := range targets {
		if strings.HasPrefix(name, t.prefix) {
			return t.target
		}
	}
	return Target{}
}

// String writes the target as the table shows it.
func (t Target) String() string {
	var parts []string
	if t.MaxRatio != 0 {
		parts = append(parts, fmt.Sprintf("x <= %g", t.MaxRatio))
	}
	if t.MinRatio != 0 {
		parts = append(parts, fmt.Sprintf("x >= %g", t.MinRatio))
	}
	if t.MinFloorRatio != 0 {
		parts = append(parts, fmt.Sprintf("x2 >= %g", t.MinFloorRatio))
	}
	if t.MinFigure != 0 {
		parts = append(parts, fmt.Sprintf(">= %g/s", t.MinFigure))
	}
	if t.MaxP99 != 0 {
		parts = append(parts, fmt.Sprintf("p99 <= %gms", t.MaxP99))
	}
	return strings.Join(parts, ", ")
}

// Met reports whether the row reaches the target; a target without bounds
// is met.
func (t Target) Met(r Row) bool {
	return (t.MaxRatio == 0 || r.Ratio <= t.MaxRatio) &&
		(t.MinRatio == 0 || r.Ratio >= t.MinRatio) &&
		(t.MinFloorRatio == 0 || r.FloorRatio >= t.MinFloorRatio) &&
		(t.MinFigure == 0 || r.Figure >= t.MinFigure) &&
		(t.MaxP99 == 0 || r.Extra["p99-ms"] <= t.MaxP99)
}

// LowerIsBetter reports whether the ratio improves as it falls: a time
// against a baseline's time.
func (t Target) LowerIsBetter() bool { return t.MaxRatio != 0 }

// cpuSuffix is the -N go test appends to a benchmark's name.
var cpuSuffix = regexp.MustCompile(`-\d+$`)

// ParseBench reads the benchmark lines of `go test -bench` output. A
// benchmark reports its figure under a unit, the baseline under
// "base-"+unit, their ratio under "x-base", and a second baseline under
// "base2-"+unit with "x-base2" (Report); lines without a baseline are
// skipped.
func ParseBench(r io.Reader) ([]Row, error) {
	var rows []Row
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		values := map[string]float64{}
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			values[fields[i+1]] = v
		}
		row := Row{Name: cpuSuffix.ReplaceAllString(fields[0], ""), Extra: map[string]float64{}}
		for unit := range values {
			if _, ok := values["base-"+unit]; ok {
				row.Unit = unit
			}
		}
		if row.Unit == "" {
			continue
		}
		row.Figure, row.Baseline, row.Ratio = values[row.Unit], values["base-"+row.Unit], values["x-base"]
		row.Floor, row.FloorRatio = values["base2-"+row.Unit], values["x-base2"]
		for unit, v := range values {
			switch unit {
			case row.Unit, "base-" + row.Unit, "base2-" + row.Unit, "x-base", "x-base2", "ns/op":
			default:
				row.Extra[unit] = v
			}
		}
		rows = append(rows, row)
	}
	return rows, sc.Err()
}

// WriteTable writes the rows as scripts/bench prints them: each figure,
// its baseline, the ratio (and the second baseline's), the target and
// whether it was met, then the other figures.
func WriteTable(w io.Writer, rows []Row) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "%-36s %12s %12s  %-14s %7s %7s  %-26s %s\n", "benchmark", "figure", "baseline", "unit", "x", "x2", "target", "result")
	for _, r := range rows {
		t := TargetOf(r.Name)
		result := "met"
		if !t.Met(r) {
			result = "MISSED"
		}
		floor := "-"
		if r.FloorRatio != 0 {
			floor = fmt.Sprintf("%.3f", r.FloorRatio)
		}
		fmt.Fprintf(bw, "%-36s %12.5g %12.5g  %-14s %7.3f %7s  %-26s %-6s%s\n",
			r.Name, r.Figure, r.Baseline, r.Unit, r.Ratio, floor, t, result, extras(r))
	}
	return bw.Flush()
}

func extras(r Row) string {
	keys := slices.Sorted(maps.Keys(r.Extra))
	var s strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&s, " %s=%g", k, r.Extra[k])
	}
	if r.Floor != 0 {
		fmt.Fprintf(&s, " base2=%.5g", r.Floor)
	}
	return s.String()
}

// Drift is how much a ratio may move the wrong way between two recorded
// runs before Compare flags it.
const Drift = 0.15

// A Change is one benchmark in two runs.
type Change struct {
	Name       string
	Old, New   float64 // the ratios
	Worse      float64 // how much worse, as a fraction of the old ratio (negative: better)
	Flagged    bool
	OnlyInNew  bool
	OnlyInLast bool
}

// Compare holds each ratio of the new run against the last recorded one.
// A ratio that moved more than Drift the wrong way — up for a time against
// its baseline, down for a rate — is flagged.
func Compare(last, current []Row) []Change {
	old := map[string]Row{}
	for _, r := range last {
		old[r.Name] = r
	}
	seen := map[string]bool{}
	var out []Change
	for _, r := range current {
		seen[r.Name] = true
		o, ok := old[r.Name]
		if !ok || o.Ratio == 0 {
			out = append(out, Change{Name: r.Name, New: r.Ratio, OnlyInNew: true})
			continue
		}
		c := Change{Name: r.Name, Old: o.Ratio, New: r.Ratio}
		c.Worse = (o.Ratio - r.Ratio) / o.Ratio // a rate falling
		if TargetOf(r.Name).LowerIsBetter() {
			c.Worse = -c.Worse // a time rising
		}
		c.Flagged = c.Worse > Drift+1e-9 && !math.IsInf(c.Worse, 0)
		out = append(out, c)
	}
	for _, r := range last {
		if !seen[r.Name] {
			out = append(out, Change{Name: r.Name, Old: r.Ratio, OnlyInLast: true})
		}
	}
	return out
}

// WriteComparison writes the changes, one line each, with the flagged ones
// marked, and returns how many were flagged.
func WriteComparison(w io.Writer, changes []Change) (int, error) {
	bw := bufio.NewWriter(w)
	flagged := 0
	fmt.Fprintf(bw, "%-36s %9s %9s %9s\n", "benchmark", "last x", "now x", "worse by")
	for _, c := range changes {
		switch {
		case c.OnlyInNew:
			fmt.Fprintf(bw, "%-36s %9s %9.3f %9s  (not recorded before)\n", c.Name, "-", c.New, "-")
		case c.OnlyInLast:
			fmt.Fprintf(bw, "%-36s %9.3f %9s %9s  (not run now)\n", c.Name, c.Old, "-", "-")
		default:
			mark := ""
			if c.Flagged {
				mark = fmt.Sprintf("  MOVED the wrong way by more than %d%%", int(Drift*100))
				flagged++
			}
			fmt.Fprintf(bw, "%-36s %9.3f %9.3f %8.0f%%%s\n", c.Name, c.Old, c.New, c.Worse*100, mark)
		}
	}
	return flagged, bw.Flush()
}

// A Run is one recorded run of scripts/bench: its heading (when, which
// commit, how many cores) and its rows.
type Run struct {
	Heading string
	Rows    []Row
}

// WriteRun writes a run as a block of the history: a heading and a
// Markdown table, which ReadHistory reads back.
func WriteRun(w io.Writer, run Run) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "\n## %s\n\n", run.Heading)
	fmt.Fprintln(bw, "| benchmark | figure | baseline | unit | x | x2 | target | result | other |")
	fmt.Fprintln(bw, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range run.Rows {
		t := TargetOf(r.Name)
		result := "met"
		if !t.Met(r) {
			result = "MISSED"
		}
		floor := ""
		if r.FloorRatio != 0 {
			floor = strconv.FormatFloat(r.FloorRatio, 'g', 4, 64)
		}
		fmt.Fprintf(bw, "| %s | %.5g | %.5g | %s | %.4g | %s | %s | %s | %s |\n",
			r.Name, r.Figure, r.Baseline, r.Unit, r.Ratio, floor, t, result, strings.TrimSpace(extras(r)))
	}
	return bw.Flush()
}

// ReadHistory reads the runs a history file holds, oldest first.
func ReadHistory(r io.Reader) ([]Run, error) {
	var runs []Run
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if heading, ok := strings.CutPrefix(line, "## "); ok {
			runs = append(runs, Run{Heading: heading})
			continue
		}
		inner := strings.TrimSuffix(strings.TrimPrefix(line, "| "), " |")
		cells := strings.Split(inner, " | ")
		if len(runs) == 0 || !strings.HasPrefix(line, "| Benchmark") || len(cells) < 9 {
			continue
		}
		row := Row{Name: cells[0], Unit: cells[3], Extra: map[string]float64{}}
		var err error
		if row.Figure, err = strconv.ParseFloat(cells[1], 64); err != nil {
			return nil, fmt.Errorf("reading %q: %w", line, err)
		}
		if row.Baseline, err = strconv.ParseFloat(cells[2], 64); err != nil {
			return nil, fmt.Errorf("reading %q: %w", line, err)
		}
		if row.Ratio, err = strconv.ParseFloat(cells[4], 64); err != nil {
			return nil, fmt.Errorf("reading %q: %w", line, err)
		}
		if cells[5] != "" {
			if row.FloorRatio, err = strconv.ParseFloat(cells[5], 64); err != nil {
				return nil, fmt.Errorf("reading %q: %w", line, err)
			}
		}
		for _, kv := range strings.Fields(cells[8]) {
			k, v, _ := strings.Cut(kv, "=")
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				if k == "base2" {
					row.Floor = f
				} else {
					row.Extra[k] = f
				}
			}
		}
		runs[len(runs)-1].Rows = append(runs[len(runs)-1].Rows, row)
	}
	return runs, sc.Err()
}
