package buckets

import (
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
