package benchreport

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const lastRun = `goos: linux
BenchmarkSweep/steady-2        	       3	1234 ns/op	        2.000 s/run	        1.600 base-s/run	         1.250 x-base
BenchmarkDispatch-2            	       4	1234 ns/op	      400.0 events/s	      500.0 base-events/s	         0.8000 x-base
BenchmarkIngest-2              	       1	1234 ns/op	       40.00 events/s	       50.00 base-events/s	         0.8000 x-base	   44.00 base2-events/s	 0.9091 x-base2	 120 p50-ms	 900 p99-ms
BenchmarkFunnel/entered-2      	      10	1234 ns/op	    20000 transitions/s	    24000 base-transitions/s	         0.8333 x-base
BenchmarkBackfill/dormant-2    	       3	1234 ns/op	        1.300 s/run	        1.000 base-s/run	         1.300 x-base
`

// this run: the sweep's ratio rose 16% (a time: worse), the dispatch fell
// 10% (not past the threshold), ingest fell 20% (worse), the funnel rose
// (better), the backfill's time fell (better), a new benchmark appeared.
const thisRun = `BenchmarkSweep/steady-2        	       3	1234 ns/op	        2.320 s/run	        1.600 base-s/run	         1.450 x-base
BenchmarkDispatch-2            	       4	1234 ns/op	      360.0 events/s	      500.0 base-events/s	         0.7200 x-base
BenchmarkIngest-2              	       1	1234 ns/op	       32.00 events/s	       50.00 base-events/s	         0.6400 x-base	   44.00 base2-events/s	 0.7273 x-base2	 150 p50-ms	 990 p99-ms
BenchmarkFunnel/entered-2      	      10	1234 ns/op	    24000 transitions/s	    24000 base-transitions/s	         1.000 x-base
BenchmarkBackfill/dormant-2    	       3	1234 ns/op	        1.100 s/run	        1.000 base-s/run	         1.100 x-base
BenchmarkDateJoins-2           	       3	1234 ns/op	        2.000 s/run	        1.500 base-s/run	         1.333 x-base
`

func parse(t *testing.T, out string) []Row {
	t.Helper()
	rows, err := ParseBench(strings.NewReader(out))
	require.NoError(t, err)
	return rows
}

func TestCompareFlagsWhatMovedTheWrongWay(t *testing.T) {
	t.Parallel()
	var history bytes.Buffer
	require.NoError(t, WriteRun(&history, Run{Heading: "first", Rows: parse(t, lastRun)}))
	require.NoError(t, WriteRun(&history, Run{Heading: "second", Rows: parse(t, thisRun)}))
	runs, err := ReadHistory(&history)
	require.NoError(t, err)
	require.Len(t, runs, 2)
	require.Equal(t, parse(t, lastRun), runs[0].Rows, "a recorded run reads back as it was")

	flagged := map[string]bool{}
	for _, c := range Compare(runs[0].Rows, runs[1].Rows) {
		flagged[c.Name] = c.Flagged
	}
	require.Equal(t, map[string]bool{
		"BenchmarkSweep/steady":     true,  // a time's ratio up 16%
		"BenchmarkDispatch":         false, // down 10%
		"BenchmarkIngest":           true,  // a rate's ratio down 20%
		"BenchmarkFunnel/entered":   false, // better
		"BenchmarkBackfill/dormant": false, // better
		"BenchmarkDateJoins":        false, // not recorded before
	}, flagged)

	var table strings.Builder
	require.NoError(t, WriteTable(&table, runs[1].Rows))
	require.Contains(t, table.String(), "BenchmarkIngest")
	require.Contains(t, table.String(), "MISSED") // ingest's 0.64 < 0.7
}

// TestBenchCompareCommand runs scripts/bench compare on a history of two
// recorded tables: it prints both ratios and exits 1 for the moved rows.
func TestBenchCompareCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds benchtable")
	}
	t.Parallel()
	dir := t.TempDir()
	history := filepath.Join(dir, "history.md")
	var b bytes.Buffer
	require.NoError(t, WriteRun(&b, Run{Heading: "first", Rows: parse(t, lastRun)}))
	require.NoError(t, WriteRun(&b, Run{Heading: "second", Rows: parse(t, thisRun)}))
	require.NoError(t, os.WriteFile(history, b.Bytes(), 0o644))

	cmd := exec.Command("../../scripts/bench", "compare", history)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	require.Equal(t, 1, exit.ExitCode(), "%s", out)
	require.Contains(t, string(out), "2 ratio(s) moved more than 15% the wrong way")
	lines := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[f[0]] = l
		}
	}
	require.Contains(t, lines["BenchmarkSweep/steady"], "MOVED")
	require.Contains(t, lines["BenchmarkIngest"], "MOVED")
	require.NotContains(t, lines["BenchmarkDispatch"], "MOVED")
	require.Contains(t, lines["BenchmarkDispatch"], "0.800")
	require.Contains(t, lines["BenchmarkDispatch"], "0.720")
}
