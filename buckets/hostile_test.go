package buckets

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"
)

// hostileFiles are the files of testdata/hostile: each would once have
// taken the worker down.
func hostileFiles(t testing.TB) map[string][]byte {
	entries, err := os.ReadDir("testdata/hostile")
	require.NoError(t, err)
	files := map[string][]byte{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("testdata/hostile", e.Name()))
		require.NoError(t, err)
		files[e.Name()] = data
	}
	require.NotEmpty(t, files)
	return files
}

// TestHostileFilesAreCheap loads each hostile file: one error naming the
// file, found in well under a second and a few megabytes of allocation
// (contract §2).
func TestHostileFilesAreCheap(t *testing.T) {
	deep := "id: deep\nname: Deep\ncriteria: " + strings.Repeat("{type: composite, operator: and, conditions: [", 2999) +
		"{type: event, eventName: a, check: exists}" + strings.Repeat("]}", 2999) + "\n"
	files := hostileFiles(t)
	files["deep.yaml"] = []byte(deep)
	for name, data := range files {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		bs, report := Load(fstest.MapFS{"buckets/" + name: {Data: data}})
		elapsed := time.Since(start)
		runtime.ReadMemStats(&after)
		require.Empty(t, bs, name)
		require.Len(t, report.Errors, 1, "%s: %v", name, report.Errors)
		require.Equal(t, "buckets/"+name, report.Errors[0].File)
		require.Less(t, elapsed, 500*time.Millisecond, name)
		require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(8<<20), "%s: bytes allocated", name)
	}
}

// TestLongChainsOfBucketLegsAreCheap: 5 000 buckets in one file, each
// reading the next — a chain far deeper than allowed — and 5 000 in a
// ring: the references are checked in one walk, each bucket reported once,
// in less than twice the time 5 000 buckets without legs take to load.
func TestLongChainsOfBucketLegsAreCheap(t *testing.T) {
	const n = 5_000
	var plain strings.Builder
	for i := range n + 1 {
		fmt.Fprintf(&plain, "- {id: c%d, name: C, criteria: {type: event, eventName: a, check: exists}}\n", i)
	}
	start := time.Now()
	bs, report := Load(fstest.MapFS{"buckets/plain.yaml": {Data: []byte(plain.String())}})
	require.NoError(t, report.Err())
	require.Len(t, bs, n+1)
	unlinked := time.Since(start)
	for _, ring := range []bool{false, true} {
		var b strings.Builder
		for i := range n {
			next := i + 1
			if ring {
				next %= n
			}
			fmt.Fprintf(&b, "- {id: c%d, name: C, criteria: {type: bucket, bucketId: c%d, check: member}}\n", i, next)
		}
		if !ring {
			fmt.Fprintf(&b, "- {id: c%d, name: C, criteria: {type: event, eventName: a, check: exists}}\n", n)
		}
		start := time.Now()
		bs, report := Load(fstest.MapFS{"buckets/chain.yaml": {Data: []byte(b.String())}})
		elapsed := time.Since(start)
		require.Less(t, elapsed, 2*unlinked+100*time.Millisecond, "ring %v (without legs: %s)", ring, unlinked)
		if ring {
			require.Empty(t, bs)
			require.Len(t, report.Errors, n, "each bucket of the ring reported once")
		} else {
			require.Len(t, bs, MaxReferenceDepth+1, "the last nine buckets of the chain are at most eight deep")
		}
	}
}
