//go:build e2e

// Package e2e runs the worker binary against the real Hatchet server and
// Postgres that scripts/stack starts, and asserts through Hatchet's API.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hatchet-dev/hatchet/pkg/client/rest"
	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/tasks"
)

// sdkLogger keeps the SDK workers of the tests at warn: at debug they log
// every action they run.
var sdkLogger = func() *zerolog.Logger {
	l := zerolog.New(os.Stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	return &l
}()

// farCron keeps the cron from firing during a test: the tests trigger the
// sweep by name.
const farCron = "0 0 1 1 *"

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// workerBinary builds cmd/bucket-worker once per test binary.
func workerBinary(t testing.TB) string {
	t.Helper()
	require.NotEmpty(t, os.Getenv("HATCHET_CLIENT_TOKEN"), "run through scripts/test, which starts Hatchet")
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bucket-worker-e2e")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "bucket-worker")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/bucket-worker").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

// worker is a running `bucket-worker run`.
type worker struct {
	cmd  *exec.Cmd
	name string
	mu   sync.Mutex
	logs strings.Builder
	stop sync.Once
}

// Stop stops the worker gracefully, once, so that Hatchet stops assigning
// runs to it at once: a killed worker looks alive until its heartbeat
// times out, and the next test's runs could be handed to it.
func (w *worker) Stop() {
	w.stop.Do(func() {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = w.cmd.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = w.cmd.Process.Kill()
			<-done
		}
	})
}

func (w *worker) Logs() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs.String()
}

// startWorker runs the worker with extra environment and waits until it
// logged that it started. It is killed when the test ends.
func startWorker(t testing.TB, env ...string) *worker {
	t.Helper()
	w, started := launchWorker(t, env...)
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		t.Fatalf("worker did not start:\n%s", w.Logs())
	}
	return w
}

// launchWorker runs the worker with extra environment and returns at
// once, with a channel closed when it logged that it started.
func launchWorker(t testing.TB, env ...string) (*worker, <-chan struct{}) {
	t.Helper()
	w := &worker{name: "e2e-" + time.Now().Format("150405.000")}
	w.cmd = exec.Command(workerBinary(t), "run")
	// Each worker serves its metrics on a port of its own, unless told.
	w.cmd.Env = append(append(os.Environ(), "WORKER_NAME="+w.name, "LOG_FORMAT=json", "BUCKET_RECONCILE_CRON="+farCron,
		"METRICS_ADDR=127.0.0.1:0"), env...)
	stderr, err := w.cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, w.cmd.Start())
	t.Cleanup(w.Stop)

	started := make(chan struct{})
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			w.mu.Lock()
			w.logs.WriteString(scanner.Text() + "\n")
			w.mu.Unlock()
			if strings.Contains(scanner.Text(), `"msg":"worker started"`) {
				close(started)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	return w, started
}

// definitions writes a definitions folder of bucket files (name → YAML).
func definitions(t testing.TB, bucketFiles map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "buckets"), 0o755))
	for name, content := range bucketFiles {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "buckets", name), []byte(content), 0o644))
	}
	return dir
}

// hatchetAPI GETs a path of the stack's Hatchet REST API into out.
func hatchetAPI(t testing.TB, path string, out any) {
	t.Helper()
	hatchetAPIOf(t, os.Getenv("HATCHET_API_URL"), os.Getenv("HATCHET_CLIENT_TOKEN"), path, out)
}

// hatchetAPIOf GETs a path of the REST API of the Hatchet at apiURL.
func hatchetAPIOf(t testing.TB, apiURL, token, path string, out any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, apiURL+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s: %s", path, body)
	require.NoError(t, json.Unmarshal(body, out), string(body))
}

// pushedEvents counts the events of the key that reached the Hatchet at
// apiURL, by their idempotency key.
func pushedEvents(t testing.TB, apiURL, token, tenant, key string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for offset := 0; ; offset += 1000 {
		var page struct {
			Rows []struct {
				AdditionalMetadata map[string]string `json:"additionalMetadata"`
			} `json:"rows"`
		}
		hatchetAPIOf(t, apiURL, token, fmt.Sprintf("/api/v1/stable/tenants/%s/events?limit=1000&offset=%d&keys=%s",
			tenant, offset, url.QueryEscape(key)), &page)
		for _, r := range page.Rows {
			out[r.AdditionalMetadata["idempotencyKey"]]++
		}
		if len(page.Rows) < 1000 {
			return out
		}
	}
}

// delivery is one event a listening task received.
type delivery struct {
	Input    map[string]any
	Metadata map[string]string
	// RunID is the listener's run: Hatchet may run one task twice (it
	// delivers at least once), so two deliveries of one run are one event.
	RunID string
}

// listen starts a worker with a task on each event key and returns what
// each key delivered, in order. The worker stops when the test ends.
func listen(t *testing.T, client *hatchet.Client, name string, keys ...string) func(key string) []delivery {
	seen, stop := listenStoppable(t, client, name, keys...)
	t.Cleanup(func() { _ = stop() })
	return seen
}

// listenStoppable is listen with the worker's stop function.
func listenStoppable(t *testing.T, client *hatchet.Client, name string, keys ...string) (func(key string) []delivery, func() error) {
	var mu sync.Mutex
	seen := map[string][]delivery{}
	var workflows []hatchet.WorkflowBase
	for i, key := range keys {
		workflows = append(workflows, client.NewStandaloneTask(fmt.Sprintf("%s-%d", name, i), func(ctx hatchet.Context, in map[string]any) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			seen[key] = append(seen[key], delivery{Input: in, Metadata: ctx.AdditionalMetadata(), RunID: ctx.WorkflowRunId()})
			return nil, nil
		}, hatchet.WithWorkflowEvents(key)))
	}
	w, err := client.NewWorker(name, hatchet.WithWorkflows(workflows...), hatchet.WithLogger(sdkLogger))
	require.NoError(t, err)
	stop, err := w.Start()
	require.NoError(t, err)
	return func(key string) []delivery {
		mu.Lock()
		defer mu.Unlock()
		return append([]delivery(nil), seen[key]...)
	}, stop
}

// users are the userId of each delivery.
func users(ds []delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i], _ = d.Input["userId"].(string)
	}
	return out
}

// workflowID is the id of the workflow named exactly name.
func workflowID(t testing.TB, client *hatchet.Client, name string) uuid.UUID {
	t.Helper()
	id, ok := lookupWorkflow(t, client, name)
	if !ok {
		t.Fatalf("no workflow is named %s", name)
	}
	return id
}

// lookupWorkflow finds the workflow named exactly name. The SDK's
// Workflows().GetId takes the first workflow whose name contains the name,
// and bucket-reconcile-bucket contains bucket-reconcile.
func lookupWorkflow(t testing.TB, client *hatchet.Client, name string) (uuid.UUID, bool) {
	t.Helper()
	list, err := client.Workflows().List(context.Background(), &rest.WorkflowListParams{Name: &name})
	require.NoError(t, err)
	for _, w := range *list.Rows {
		if w.Name == name {
			return uuid.MustParse(w.Metadata.Id), true
		}
	}
	return uuid.Nil, false
}

// cancelStraySweeps cancels the sweeps an earlier test left in the shared
// Hatchet before this test's replicas start: the dashboard test registers
// a real cron, and a run of it queued after its worker stopped would wait
// for the next worker of bucket-reconcile — these replicas — and sweep this
// test's database first.
func cancelStraySweeps(t testing.TB) {
	t.Helper()
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	var ids []uuid.UUID
	for _, name := range []string{tasks.TaskReconcile, tasks.TaskReconcileBucket} {
		if id, ok := lookupWorkflow(t, client, name); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return // no sweep was ever registered
	}
	// Only runs created until now: Hatchet cancels asynchronously, and the
	// test's own runs come next.
	statuses := []rest.V1TaskStatus{rest.V1TaskStatusQUEUED, rest.V1TaskStatusRUNNING}
	until := time.Now()
	_, err = client.Runs().Cancel(context.Background(), rest.V1CancelTaskRequest{Filter: &rest.V1TaskFilter{
		Since: until.Add(-24 * time.Hour), Until: &until, Statuses: &statuses, WorkflowIds: &ids}})
	require.NoError(t, err)
}
