//go:build e2e && slow

package e2e

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestHatchetRestarts stops and starts the worker's Hatchet: on the same
// database the worker keeps running and serves again; a command run
// meanwhile waits for Hatchet at most a few seconds and leaves its push in
// the outbox. Started afresh with a new token, the server rejects the
// worker's, and the worker exits with a one-line error instead of a panic;
// a worker with the new token delivers what is left. Each join arrives
// once.
func TestHatchetRestarts(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stack := newOwnStack(t)
	defsDir := definitions(t, map[string]string{"e2e-restart.yaml": "id: e2e-restart\nname: E2E restart\n" +
		"criteria: {type: event, eventName: e2e.hello, check: exists}\n"})
	env := append([]string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + defsDir}, stack.hatchetVars()...)

	// Each phase listens with a worker of its own, stopped before Hatchet
	// goes away; the events that reached Hatchet are counted by
	// idempotency key before each reset.
	pushed := map[string]int{}
	var stopListener func() error
	var seen func(string) []delivery
	listenOn := func() {
		seen, stopListener = listenStoppable(t, stack.client(), "e2e-restart-listener", "bucket:entered:e2e-restart")
	}
	drain := func(users ...string) {
		t.Helper()
		require.Eventually(t, func() bool {
			got := map[string]bool{}
			for _, d := range seen("bucket:entered:e2e-restart") {
				got[d.Input["userId"].(string)] = true
			}
			for _, u := range users {
				if !got[u] {
					return false
				}
			}
			return true
		}, 3*time.Minute, time.Second, "deliveries of %v", users)
		time.Sleep(2 * time.Second) // the listener reports its runs done
		require.NoError(t, stopListener())
	}
	push := func(user string) {
		t.Helper()
		require.NoError(t, stack.client().Events().Push(ctx, "e2e.hello", map[string]any{"userId": user}))
	}
	joined := func(user string) func() bool {
		return func() bool { return status(t, conn, "e2e-restart", user) == db.StatusActive }
	}

	listenOn()
	w := startWorker(t, env...)
	push("before")
	require.Eventually(t, joined("before"), time.Minute, 200*time.Millisecond, w.Logs())
	drain("before")

	// Down: the worker stays up; an ingest from the command line gives up
	// on Hatchet within seconds and says its push is pending.
	stack.run("down")
	require.Eventually(t, func() bool { return strings.Contains(w.Logs(), "Hatchet is away") }, 15*time.Second, 200*time.Millisecond, w.Logs())
	// A worker started now says within 5 s that Hatchet does not answer,
	// and keeps saying it.
	late, lateStarted := launchWorker(t, env...)
	unreachable := func() int { return strings.Count(late.Logs(), "Hatchet does not answer") }
	require.Eventually(t, func() bool { return unreachable() >= 1 }, 7*time.Second, 200*time.Millisecond, late.Logs())
	began := time.Now()
	cmd := exec.Command(workerBinary(t), "ingest", "--event", "e2e.hello", "--user", "while-down", "--json")
	cmd.Env = append(append(os.Environ(), env...), "LOG_FORMAT=json")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Less(t, time.Since(began), 15*time.Second, "the command waited for Hatchet: %s", out)
	require.Contains(t, string(out), "stay pending in the outbox")
	require.Equal(t, db.StatusActive, status(t, conn, "e2e-restart", "while-down"))
	require.Nil(t, w.cmd.ProcessState, "the worker is still running")
	require.Eventually(t, func() bool { return unreachable() >= 2 }, 20*time.Second, 200*time.Millisecond, late.Logs())
	require.Contains(t, w.Logs(), "Hatchet does not answer", "the running worker says it too while it waits")

	// Up on the same database: the worker serves again, the pending push
	// goes out, and a new event is ingested; the late worker starts.
	stack.run("up")
	require.Eventually(t, func() bool { return strings.Contains(w.Logs(), "Hatchet is back") }, time.Minute, 200*time.Millisecond, w.Logs())
	select {
	case <-lateStarted:
	case <-time.After(time.Minute):
		t.Fatalf("the worker started while Hatchet was down did not start once it was up:\n%s", late.Logs())
	}
	listenOn()
	push("after")
	require.Eventually(t, joined("after"), 3*time.Minute, time.Second, w.Logs())
	drain("while-down", "after")

	maps.Copy(pushed, stack.pushedEvents("bucket:entered:e2e-restart"))

	// Afresh, with a new token: the worker's token is rejected and it
	// exits cleanly.
	stack.run("reset")
	exited := make(chan error, 1)
	go func() { exited <- w.cmd.Wait() }()
	select {
	case err := <-exited:
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		require.Equal(t, 1, exit.ExitCode())
	case <-time.After(time.Minute):
		t.Fatalf("the worker did not exit on a rejected token:\n%s", w.Logs())
	}
	logs := w.Logs()
	require.Contains(t, logs, "rejects HATCHET_CLIENT_TOKEN")
	require.NotContains(t, logs, "panic:")
	require.NotContains(t, logs, "goroutine ")

	// A worker with the new token; nothing was lost from the outbox.
	env = append([]string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + defsDir}, stack.hatchetVars()...)
	listenOn()
	w2 := startWorker(t, env...)
	push("fresh")
	require.Eventually(t, joined("fresh"), 3*time.Minute, time.Second, w2.Logs())
	drain("fresh")
	maps.Copy(pushed, stack.pushedEvents("bucket:entered:e2e-restart"))

	var pending int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM bucket_event_outbox WHERE dispatched_at IS NULL").Scan(ctx, &pending))
	require.Zero(t, pending, "every push left the outbox")
	require.Equal(t, map[string]int{"bucket:e2e-restart:before:entered:1": 1, "bucket:e2e-restart:while-down:entered:1": 1,
		"bucket:e2e-restart:after:entered:1": 1, "bucket:e2e-restart:fresh:entered:1": 1}, pushed, "each join reached Hatchet once")
}

// TestStackKeepsItsState: scripts/stack up twice, down, up again keeps
// Hatchet's database and token; the running worker serves again, and a
// timer armed before the restart fires.
func TestStackKeepsItsState(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	stack := newOwnStack(t)
	token := stack.workerEnv()["HATCHET_CLIENT_TOKEN"]
	stack.run("up")
	require.Equal(t, token, stack.workerEnv()["HATCHET_CLIENT_TOKEN"], "a second up changes nothing")

	defsDir := definitions(t, map[string]string{"e2e-tick.yaml": "id: e2e-tick\nname: E2E tick\nfastExpiry: true\n" +
		"criteria: {type: event, eventName: e2e.tick, check: exists, within: 90s}\n"})
	w := startWorker(t, append([]string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + defsDir}, stack.hatchetVars()...)...)
	require.NoError(t, stack.client().Events().Push(ctx, "e2e.tick", map[string]any{"userId": "ticker"}))
	require.Eventually(t, func() bool { return status(t, conn, "e2e-tick", "ticker") == db.StatusActive },
		time.Minute, 200*time.Millisecond, w.Logs())
	var armed int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM bucket_expiry_timers").Scan(ctx, &armed))
	require.Equal(t, 1, armed)
	deadline := *membership(t, conn, "e2e-tick", "ticker").ExpiresAt

	stack.run("down")
	require.Eventually(t, func() bool { return strings.Contains(w.Logs(), "Hatchet is away") }, 15*time.Second, 200*time.Millisecond)
	stack.run("up")
	require.Equal(t, token, stack.workerEnv()["HATCHET_CLIENT_TOKEN"], "the token survives down and up")
	require.Eventually(t, func() bool { return strings.Contains(w.Logs(), "Hatchet is back") }, time.Minute, 200*time.Millisecond, w.Logs())

	require.Eventually(t, func() bool { return status(t, conn, "e2e-tick", "ticker") == db.StatusLeft },
		time.Until(deadline)+expiryLateness, time.Second, "the timer armed before the restart fires\n%s", w.Logs())
	require.Nil(t, w.cmd.ProcessState, "the worker kept running")
	// The worker is connected again: it takes a new event.
	require.NoError(t, stack.client().Events().Push(ctx, "e2e.tick", map[string]any{"userId": "after"}))
	require.Eventually(t, func() bool { return status(t, conn, "e2e-tick", "after") == db.StatusActive },
		3*time.Minute, time.Second, w.Logs())
}
