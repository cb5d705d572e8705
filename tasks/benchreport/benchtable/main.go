// Command benchtable is what scripts/bench tabulates and records with:
//
//	benchtable table FILE                        the table of a go test -bench output
//	benchtable record FILE HISTORY HEADING       append the run to the history
//	benchtable compare HISTORY [FILE]            each ratio against the last recorded run
//
// compare holds FILE's run (or, without it, the history's last run)
// against the history's last run before it, and exits 1 when a ratio
// moved more than 15% the wrong way.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: benchtable table FILE | record FILE HISTORY HEADING | compare HISTORY [FILE]")
	}
	switch {
	case args[0] == "table" && len(args) == 2:
		rows, err := parseFile(args[1])
		if err != nil {
			return err
		}
		return benchreport.WriteTable(stdout, rows)
	case args[0] == "record" && len(args) == 4:
		rows, err := parseFile(args[1])
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return fmt.Errorf("%s holds no benchmark with a baseline: nothing recorded", args[1])
		}
		f, err := os.OpenFile(args[2], os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if err := benchreport.WriteRun(f, benchreport.Run{Heading: args[3], Rows: rows}); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	case args[0] == "compare" && (len(args) == 2 || len(args) == 3):
		runs, err := readHistory(args[1])
		if err != nil {
			return err
		}
		current := benchreport.Run{Heading: "this run"}
		if len(args) == 3 {
			if current.Rows, err = parseFile(args[2]); err != nil {
				return err
			}
		} else if len(runs) > 0 {
			current, runs = runs[len(runs)-1], runs[:len(runs)-1]
		}
		if len(runs) == 0 {
			return fmt.Errorf("%s holds no earlier run to compare with", args[1])
		}
		last := runs[len(runs)-1]
		fmt.Fprintf(stdout, "%s\nagainst the last recorded run, %s:\n\n", current.Heading, last.Heading)
		flagged, err := benchreport.WriteComparison(stdout, benchreport.Compare(last.Rows, current.Rows))
		if err != nil {
			return err
		}
		if flagged > 0 {
			return fmt.Errorf("%d ratio(s) moved more than %d%% the wrong way", flagged, int(benchreport.Drift*100))
		}
		return nil
	}
	return fmt.Errorf("usage: benchtable table FILE | record FILE HISTORY HEADING | compare HISTORY [FILE]")
}

func parseFile(path string) ([]benchreport.Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return benchreport.ParseBench(f)
}

func readHistory(path string) ([]benchreport.Run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return benchreport.ReadHistory(f)
}
