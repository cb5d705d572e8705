//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
)

// The dashboard's login on the local stack (hatchet-admin seed).
const (
	dashboardEmail    = "admin@example.com"
	dashboardPassword = "Admin123!!"
)

// browser is a headless Debian Chromium that saves a screenshot of each
// step into dir.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	dir  string
	step int
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	require.NoError(t, err, "the dashboard test drives Debian's Chromium: STACK_BROWSER=1 scripts/stack up installs it (scripts/test does)")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 900),
		chromedp.UserDataDir(t.TempDir()),
		// The machine's network is closed: no background connections.
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelBrowser := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelBrowser(); cancelAlloc() })
	dir := os.Getenv("DASHBOARD_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	// localhost, not 127.0.0.1: the session cookie's domain is localhost.
	return &browser{t: t, ctx: ctx, base: os.Getenv("HATCHET_DASHBOARD_URL"), dir: dir}
}

// open goes to the dashboard path and waits until the page shows every
// text in want (each may take a while to load).
func (b *browser) open(path string, want ...string) string {
	b.t.Helper()
	require.NoError(b.t, chromedp.Do(b.ctx, chromedp.Navigate(b.base+path)))
	return b.expect(want...)
}

// expect waits until the page shows every text in want, and returns the
// page's text.
func (b *browser) expect(want ...string) string {
	b.t.Helper()
	var text string
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		text, err = chromedp.Run(b.ctx, chromedp.Text("body"))
		missing := ""
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = w
			}
		}
		if err == nil && missing == "" {
			return text
		}
		if time.Now().After(deadline) {
			b.shot("failed")
			b.t.Fatalf("the page does not show %q (err %v):\n%s", missing, err, text)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// shot saves a screenshot of the page as NN-name.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	b.step++
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	require.NoError(b.t, err)
	require.NoError(b.t, os.WriteFile(filepath.Join(b.dir, fmt.Sprintf("%02d-%s.png", b.step, name)), png, 0o644))
}

func (b *browser) location() string {
	b.t.Helper()
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	require.NoError(b.t, err)
	return loc
}

// TestDashboard drives the real Hatchet dashboard in Chromium over what
// the worker did: an event pushed with `bucket-worker push` joins a user;
// then the login, the bucket-reconcile workflow with its cron and
// concurrency, the bucket-ingest run and its output, the runs filtered by
// the user's metadata, and the bucket:entered event. Each step asserts on
// text the page shows and saves a screenshot (DASHBOARD_SCREENSHOTS keeps
// them; scripts/screenshots refreshes docs/dashboard).
func TestDashboard(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	defsDir := definitions(t, map[string]string{"active-pro.yaml": "id: active-pro\nname: Active pro users\n" +
		"description: Pro users active in the last hour.\n" +
		"criteria: {type: composite, operator: and, conditions: [{type: property, property: plan, operator: eq, value: pro}, " +
		"{type: event, eventName: app.active, check: exists, within: 1h}]}\n"})
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir, "BUCKET_RECONCILE_CRON=*/5 * * * *")

	// A producer's push, with the binary.
	push := exec.Command(workerBinary(t), "push", "--event", "app.active", "--user", "ada", "--email", "ada@example.com",
		"--contact-properties", `{"plan":"pro"}`, "--properties", `{"screen":"billing"}`)
	push.Env = os.Environ()
	out, err := push.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "pushed app.active for ada")
	require.Eventually(t, func() bool { return status(t, conn, "active-pro", "ada") == db.StatusActive },
		time.Minute, 200*time.Millisecond, "the pushed event joins ada\n%s", w.Logs())
	require.Eventually(t, func() bool {
		var pending int
		_ = conn.NewRaw("SELECT count(*) FROM bucket_event_outbox WHERE dispatched_at IS NULL").Scan(ctx, &pending)
		return pending == 0
	}, time.Minute, 200*time.Millisecond, "the join's push went out")

	client, err := hatchet.NewClient()
	require.NoError(t, err)
	tenant := os.Getenv("HATCHET_TENANT_ID")
	reconcileID := workflowID(t, client, tasks.TaskReconcile)
	ingestID := workflowID(t, client, tasks.TaskIngest)
	var runs struct {
		Rows []struct {
			Metadata struct {
				ID string `json:"id"`
			} `json:"metadata"`
			Status string `json:"status"`
		} `json:"rows"`
	}
	require.Eventually(t, func() bool {
		q := url.Values{"since": {time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}, "only_tasks": {"true"},
			"workflow_ids": {ingestID.String()}, "additional_metadata": {"userId:ada"}}
		hatchetAPI(t, "/api/v1/stable/tenants/"+tenant+"/workflow-runs?"+q.Encode(), &runs)
		return len(runs.Rows) == 1 && runs.Rows[0].Status == "COMPLETED"
	}, time.Minute, time.Second, "the bucket-ingest run of ada's event")

	b := newBrowser(t)
	b.open("/", "Log in to continue")
	require.NoError(t, chromedp.Do(b.ctx,
		chromedp.SendKeys(chromedp.ID("email"), dashboardEmail),
		chromedp.SendKeys(chromedp.ID("password"), dashboardPassword),
		chromedp.Click(`//button[contains(., "Sign In")]`)))
	b.expect("Runs", "Workflows", tasks.TaskIngest+"-", tasks.TaskBackfill+"-")
	require.Contains(t, b.location(), "/tenants/"+tenant+"/runs")
	b.shot("runs")

	b.open("/tenants/"+tenant+"/workflows/"+reconcileID.String(), tasks.TaskReconcile, "Moves members in and out of time-based buckets")
	require.NoError(t, chromedp.Do(b.ctx, chromedp.Click(`//button[@role="tab"][contains(., "Settings")]`)))
	b.expect("*/5 * * * *", "Runs Every 5 minutes", "Group Round Robin", tasks.ReconcileConcurrency)
	b.shot("reconcile-workflow")

	b.open("/tenants/"+tenant+"/runs/"+runs.Rows[0].Metadata.ID, tasks.TaskIngest, "Succeeded")
	require.NoError(t, chromedp.Do(b.ctx, chromedp.Click(`//button[@role="tab"][contains(., "Output")]`)))
	b.expect(`"transitions"`, `"active-pro"`, `"entered"`)
	b.shot("ingest-run-output")

	filter, err := json.Marshal(map[string]any{"m": []string{"userId:ada"}})
	require.NoError(t, err)
	filtered := "/tenants/" + tenant + "/runs?" + url.Values{"workflow-runs-main-workflow-runs-filters": {string(filter)}}.Encode()
	text := b.open(filtered, tasks.TaskIngest+"-")
	require.NotContains(t, text, tasks.TaskBackfill+"-", "only ada's runs: the boot backfill's is filtered out")
	require.Contains(t, b.location(), "workflow-runs-main-workflow-runs-filters")
	b.shot("runs-by-user")

	b.open("/tenants/"+tenant+"/events", "bucket:entered:active-pro", "app.active")
	b.shot("events")
}
