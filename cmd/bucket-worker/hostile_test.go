package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The limits under which a hostile definition must be rejected: in CPU
// time, and with the binary's address space capped. CPU time, not wall
// time: the bound is there to catch work that runs away with its input
// (an alias expanded without end takes minutes), and CPU time does not
// grow when the tests beside this one load the machine, as a wall clock
// does (1.09 s for a 0.35 s validation once in CI). The Go runtime alone
// reserves about 1.5 GB of address space, so the cap is 2 GB; what the
// loader allocates is held to a few megabytes in-process (buckets'
// TestHostileFilesAreCheap), where it can be measured exactly.
const (
	hostileCPU = time.Second
	hostileVM  = 2 << 30 // ulimit -v, bytes
)

// runCapped runs the binary under ulimit -v hostileVM and returns its
// result and the CPU time it took (the shell execs the binary, so the
// process waited for is the binary's).
func runCapped(t *testing.T, args ...string) (result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	script := fmt.Sprintf(`ulimit -v %d && exec "$0" "$@"`, hostileVM>>10)
	cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", script, binary}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{stdout.String(), stderr.String(), code}, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// nested is a criteria tree depth composites deep.
func nested(depth int) []byte {
	var b bytes.Buffer
	b.WriteString("id: deep\nname: Deep\ncriteria: ")
	for range depth - 1 {
		b.WriteString(`{type: composite, operator: and, conditions: [`)
	}
	b.WriteString(`{type: event, eventName: a, check: exists}`)
	b.WriteString(strings.Repeat("]}", depth-1))
	b.WriteString("\n")
	return b.Bytes()
}

// wide is an or of property legs, n conditions in all.
func wide(n int) []byte {
	var b bytes.Buffer
	b.WriteString("id: wide\nname: Wide\ncriteria:\n  type: composite\n  operator: or\n  conditions:\n")
	for i := range n - 1 {
		fmt.Fprintf(&b, "    - {type: property, property: p%d, operator: exists}\n", i)
	}
	return b.Bytes()
}

// padded is a valid bucket followed by comments up to size bytes.
func padded(size int) []byte {
	var b bytes.Buffer
	b.WriteString("id: big\nname: Big\ncriteria: {type: event, eventName: a, check: exists}\n")
	line := "# " + strings.Repeat("x", 97) + "\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

// TestHostileDefinitions: each definition file of this table would have
// taken the worker down (out of memory, silently half-loaded, accepted
// unbounded). validate rejects each with one error naming the file, in
// under a second of CPU, with little memory.
func TestHostileDefinitions(t *testing.T) {
	t.Parallel()
	fixture := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join("../../buckets/testdata/hostile", name))
		require.NoError(t, err)
		return data
	}
	cases := []struct {
		file string
		data []byte
		want string
	}{
		{"self-alias.yaml", fixture("self-alias.yaml"), "line 3: the alias *x is inside the node it refers to"},
		{"alias-fan-out.yaml", fixture("alias-fan-out.yaml"), "YAML aliases expand to more than 100000 nodes"},
		{"two-documents.yaml", fixture("two-documents.yaml"), "the file holds more than one YAML document (the second starts at line 4)"},
		{"deep.yaml", nested(3000), "criteria.conditions[0]"},
		{"deep-by-one.yaml", nested(33), "the criteria nest deeper than 32 levels"},
		{"wide.yaml", wide(10_001), "criteria: the criteria have 10001 conditions; at most 10000 are allowed"},
		{"over-10mb.yaml", padded(10<<20 + 1), "a definition file may have at most 10485760 (10 MB)"},
		{"50mb.yaml", padded(50 << 20), "a definition file may have at most 10485760 (10 MB)"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "buckets"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "buckets", tc.file), tc.data, 0o644))
			r, cpu := runCapped(t, "--definitions", dir, "validate")
			require.Equal(t, 1, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
			require.Contains(t, r.stdout, "error: buckets/"+tc.file+": ")
			require.Contains(t, r.stdout, tc.want)
			require.Equal(t, 1, strings.Count(r.stdout, "error: "), r.stdout)
			require.Less(t, cpu, hostileCPU)
			t.Logf("rejected in %s of CPU", cpu.Round(time.Millisecond))
			require.NotContains(t, r.stderr, "goroutine ")
		})
	}
	// The limits are exact: at them, a definition is valid.
	for name, data := range map[string][]byte{"deep-32.yaml": nested(32), "wide-10000.yaml": wide(10_000), "10mb.yaml": padded(10 << 20)[:10<<20]} {
		dir := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "buckets"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "buckets", name), data, 0o644))
		r, cpu := runCapped(t, "--definitions", dir, "validate")
		require.Equal(t, 0, r.code, "%s: %s%s", name, r.stdout, r.stderr)
		t.Logf("%s (%d bytes): valid in %s of CPU", name, len(data), cpu.Round(time.Millisecond))
	}
}
