//go:build e2e

package e2e

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCPUTakerKinds holds the classification the ingest benchmark charges
// its legs by: each process by its command line, its CPU ticks from its
// stat line (the postmaster's with its exited children's).
func TestCPUTakerKinds(t *testing.T) {
	c := newCPUTaker("/tmp/bucket-worker-e2e1/bucket-worker", "postgres://u:p@127.0.0.1:5432/bw_test_42?sslmode=disable")
	require.Equal(t, "bw_test_42", c.workerDB)
	require.Equal(t, "hatchet_e2e", c.hatchetDB)
	// pid (comm) state ppid … utime stime cutime cstime …
	stat := "77 (some (odd) name) S 1 77 77 0 -1 4194560 100 0 0 0 30 12 500 250 20 0 1 0 100 0 0"
	cases := []struct {
		pid     int
		cmdline string
		kind    string
		ticks   int64
	}{
		{4, "/tmp/bucket-worker-e2e1/bucket-worker run", cpuWorker, 42},
		{5, "/root/.cache/bucket-worker/hatchet-v0.104.7/bin/hatchet-lite --config x", cpuHatchet, 42},
		{6, "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main", cpuPostgreSQL, 42 + 750},
		{7, "postgres: 15/main: hatchet hatchet_e2e 127.0.0.1(57628) idle", cpuHatchetDB, 42},
		{8, "postgres: 15/main: bucket_worker bw_test_42 127.0.0.1(57700) UPDATE", cpuWorkerDB, 42},
		{9, "postgres: 15/main: autovacuum worker hatchet_e2e", cpuHatchetDB, 42},
		{10, "postgres: 15/main: autovacuum worker bw_test_42", cpuWorkerDB, 42},
		{11, "postgres: 15/main: bucket_worker bw_other 127.0.0.1(1) idle", cpuPostgreSQL, 42},
		{12, "postgres: 15/main: walwriter", cpuPostgreSQL, 42},
		{os.Getpid(), "/tmp/go-build1/b001/e2e.test -test.bench", cpuBenchmark, 42},
	}
	for _, tc := range cases {
		kind, ticks, ok := c.kind(tc.pid, tc.cmdline, stat)
		require.True(t, ok, tc.cmdline)
		assert.Equal(t, tc.kind, kind, tc.cmdline)
		assert.Equal(t, tc.ticks, ticks, tc.cmdline)
	}
	_, _, ok := c.kind(13, "/usr/bin/bash", stat)
	assert.False(t, ok, "a process of no kind is left out")
}

// TestCPUSnapshotSince charges each kind what its processes took between
// two snapshots, a process that started in between whole, and a leg's
// events per side.
func TestCPUSnapshotSince(t *testing.T) {
	before := cpuSnapshot{ticks: map[int]int64{1: 100, 2: 50}, kinds: map[int]string{1: cpuHatchet, 2: cpuWorkerDB}}
	after := cpuSnapshot{ticks: map[int]int64{1: 130, 2: 60, 3: 5}, kinds: map[int]string{1: cpuHatchet, 2: cpuWorkerDB, 3: cpuWorkerDB}}
	took := after.since(before)
	assert.Equal(t, map[string]time.Duration{cpuHatchet: 300 * time.Millisecond, cpuWorkerDB: 150 * time.Millisecond}, took)

	legs := newCPULegs(cpuTaker{})
	legs.add("floor", 100, took)
	legs.add("floor", 50, map[string]time.Duration{cpuHatchet: 150 * time.Millisecond})
	all, byKind := legs.perEvent("floor")
	assert.InDelta(t, 4.0, all, 1e-9) // (300+150+150) ms / 150 events
	assert.InDelta(t, 3.0, byKind[cpuHatchet], 1e-9)
	assert.Contains(t, legs.String(), "floor")
}
