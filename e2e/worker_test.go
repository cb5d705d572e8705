//go:build e2e

package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestWorkerRegistersWithHatchet starts `bucket-worker run` with the example
// definitions and checks that Hatchet lists it as an active worker, then
// that SIGTERM stops it cleanly.
func TestWorkerRegistersWithHatchet(t *testing.T) {
	_, dbURL := dbtest.New(t)
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR=../definitions")

	client, err := hatchet.NewClient()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		list, err := client.Workers().List(ctx)
		if err != nil || list.Rows == nil {
			return false
		}
		for _, row := range *list.Rows {
			if row.Name == w.name && row.Status != nil && string(*row.Status) == "ACTIVE" {
				return true
			}
		}
		return false
	}, 20*time.Second, 250*time.Millisecond, "Hatchet lists worker %s as active", w.name)

	require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- w.cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "a graceful stop exits 0")
	case <-time.After(30 * time.Second):
		t.Fatalf("worker did not stop after SIGTERM:\n%s", w.Logs())
	}
}
