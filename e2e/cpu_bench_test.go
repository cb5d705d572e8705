//go:build e2e

package e2e

import (
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The kinds of process whose CPU time a benchmark's legs are charged by
// (see cpuSnapshot).
const (
	cpuHatchet    = "hatchet-lite"
	cpuHatchetDB  = "hatchet db"
	cpuWorker     = "worker"
	cpuWorkerDB   = "worker db"
	cpuBenchmark  = "benchmark" // this process, where the baselines' tasks run
	cpuPostgreSQL = "postgres"  // its own processes, other databases, exited backends
)

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// cpuSnapshot is the CPU time (user and system) each process of the
// machine has taken so far, with its kind: hatchet-lite; the PostgreSQL
// backends of Hatchet's database and of the worker's (by the database in
// their process title, autovacuum's included); the worker; this process;
// and the rest of PostgreSQL, with the backends that exited as the
// postmaster counts them. It reads /proc: on a machine without it, it is
// empty.
type cpuSnapshot struct {
	ticks map[int]int64
	kinds map[int]string
}

// cpuTaker takes snapshots for one benchmark: its worker's binary and
// database name what the worker's processes are.
type cpuTaker struct{ workerBinary, workerDB, hatchetDB string }

// newCPUTaker is a cpuTaker for the worker binary of this package on the
// database of dbURL, beside the tests' Hatchet.
func newCPUTaker(workerBinary, dbURL string) cpuTaker {
	hatchetDB := "hatchet"
	for _, kv := range e2eStack {
		if v, ok := strings.CutPrefix(kv, "HATCHET_DB="); ok {
			hatchetDB = v
		}
	}
	return cpuTaker{workerBinary: workerBinary, workerDB: databaseOf(dbURL), hatchetDB: hatchetDB}
}

// databaseOf is the database name of a postgres:// URL.
func databaseOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return strings.TrimPrefix(u.Path, "/")
}

// take reads the CPU time of every process of the machine.
func (c cpuTaker) take() cpuSnapshot {
	s := cpuSnapshot{ticks: map[int]int64{}, kinds: map[int]string{}}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		kind, ticks, ok := c.kind(pid, strings.ReplaceAll(string(cmdline), "\x00", " "), string(stat))
		if ok {
			s.ticks[pid], s.kinds[pid] = ticks, kind
		}
	}
	return s
}

// kind classifies a process by its command line, and reads its CPU ticks
// from its stat line; the postmaster's count those of its exited children.
func (c cpuTaker) kind(pid int, cmdline, stat string) (string, int64, bool) {
	fields := strings.Fields(stat[strings.LastIndexByte(stat, ')')+2:])
	if len(fields) < 15 {
		return "", 0, false
	}
	ticks := func(from, to int) int64 {
		var n int64
		for _, f := range fields[from:to] {
			v, _ := strconv.ParseInt(f, 10, 64)
			n += v
		}
		return n
	}
	own := ticks(11, 13) // utime, stime
	title := strings.Fields(cmdline)
	switch {
	case pid == os.Getpid():
		return cpuBenchmark, own, true
	case len(title) > 0 && title[0] == c.workerBinary:
		return cpuWorker, own, true
	case len(title) > 0 && filepath.Base(title[0]) == "hatchet-lite":
		return cpuHatchet, own, true
	case len(title) > 0 && strings.HasSuffix(title[0], "/postgres"):
		return cpuPostgreSQL, own + ticks(13, 15), true // with cutime, cstime: its exited backends
	case len(title) > 2 && title[0] == "postgres:":
		// postgres: <cluster>: <user> <database> <client> <state>, or
		// postgres: <cluster>: autovacuum worker <database>
		database := ""
		if title[2] == "autovacuum" && len(title) > 4 {
			database = title[4]
		} else if len(title) > 3 {
			database = title[3]
		}
		switch database {
		case c.hatchetDB:
			return cpuHatchetDB, own, true
		case c.workerDB:
			return cpuWorkerDB, own, true
		}
		return cpuPostgreSQL, own, true
	}
	return "", 0, false
}

// since is the CPU time each kind of process took from the earlier
// snapshot to this one; a process that started in between counts whole.
func (s cpuSnapshot) since(earlier cpuSnapshot) map[string]time.Duration {
	took := map[string]time.Duration{}
	for pid, t := range s.ticks {
		took[s.kinds[pid]] += time.Duration(t-earlier.ticks[pid]) * clockTick
	}
	return took
}

// cpuLegs sums the CPU time of a benchmark's legs, by side.
type cpuLegs struct {
	taker  cpuTaker
	took   map[string]map[string]time.Duration // side → kind → CPU time
	events map[string]int
	order  []string
	// side and start are those of the leg begun last.
	side  string
	start cpuSnapshot
}

func newCPULegs(taker cpuTaker) *cpuLegs {
	return &cpuLegs{taker: taker, took: map[string]map[string]time.Duration{}, events: map[string]int{}}
}

// begin starts a leg of the side: from its first push, so that the
// seconds a leg's worker takes to start, with the machine idle, are not
// charged to its events.
func (l *cpuLegs) begin(side string) { l.side, l.start = side, l.taker.take() }

// end ends the leg begun last, of n events, and charges it the CPU time
// the machine took since it began.
func (l *cpuLegs) end(n int) { l.add(l.side, n, l.taker.take().since(l.start)) }

// add charges the side n events and the CPU time of each kind.
func (l *cpuLegs) add(side string, n int, took map[string]time.Duration) {
	if l.took[side] == nil {
		l.took[side] = map[string]time.Duration{}
		l.order = append(l.order, side)
	}
	for kind, d := range took {
		l.took[side][kind] += d
	}
	l.events[side] += n
}

// perEvent is the side's CPU time per event, in milliseconds: of every
// process, and by kind.
func (l *cpuLegs) perEvent(side string) (float64, map[string]float64) {
	byKind := map[string]float64{}
	var all float64
	for kind, d := range l.took[side] {
		ms := float64(d) / float64(time.Millisecond) / float64(l.events[side])
		byKind[kind], all = ms, all+ms
	}
	return all, byKind
}

// String is a table of each side's CPU time per event, by kind, in
// milliseconds.
func (l *cpuLegs) String() string {
	kinds := map[string]bool{}
	for _, took := range l.took {
		for kind := range took {
			kinds[kind] = true
		}
	}
	cols := slices.Sorted(maps.Keys(kinds))
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "CPU ms per event\t%s\tall\t\n", strings.Join(cols, "\t"))
	for _, side := range l.order {
		all, byKind := l.perEvent(side)
		fmt.Fprintf(tw, "%s\t", side)
		for _, kind := range cols {
			fmt.Fprintf(tw, "%.2f\t", byKind[kind])
		}
		fmt.Fprintf(tw, "%.2f\t\n", all)
	}
	_ = tw.Flush()
	return sb.String()
}
