//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	require.NotEmpty(t, os.Getenv("HATCHET_CLIENT_TOKEN"), "run through scripts/test, which starts Hatchet")
	_, dbURL := dbtest.New(t)

	bin := filepath.Join(t.TempDir(), "bucket-worker")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/bucket-worker").CombinedOutput()
	require.NoError(t, err, string(out))

	name := "e2e-" + time.Now().Format("150405.000")
	cmd := exec.Command(bin, "run")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "DEFINITIONS_DIR=../definitions", "WORKER_NAME="+name, "LOG_FORMAT=json")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })

	started := make(chan struct{})
	var logs strings.Builder
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			logs.WriteString(scanner.Text() + "\n")
			if strings.Contains(scanner.Text(), `"msg":"worker started"`) {
				close(started)
				_, _ = io.Copy(io.Discard, stderr)
				return
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatalf("worker did not start:\n%s", logs.String())
	}

	client, err := hatchet.NewClient()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.Eventually(t, func() bool {
		list, err := client.Workers().List(ctx)
		if err != nil || list.Rows == nil {
			return false
		}
		for _, w := range *list.Rows {
			if w.Name == name && w.Status != nil && string(*w.Status) == "ACTIVE" {
				return true
			}
		}
		return false
	}, 20*time.Second, 250*time.Millisecond, "Hatchet lists worker %s as active", name)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "a graceful stop exits 0")
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop after SIGTERM")
	}
}
