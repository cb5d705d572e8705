//go:build e2e

package e2e

import (
	"bytes"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
)

// readmeBlock returns the fenced code block that follows the marker
// comment <!-- e2e: name --> in the README: the snippets a newcomer copies
// are the ones the tests run.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, after, found := strings.Cut(string(readme), "<!-- e2e: "+name+" -->\n")
	require.True(t, found, "README.md has no snippet marked %q", name)
	_, body, found := strings.Cut(after, "\n") // the ```lang line
	require.True(t, found)
	body, _, found = strings.Cut(body, "\n```")
	require.True(t, found, "the %q snippet is not closed", name)
	return body
}

const activeProBucket = "id: active-pro\nname: Active pro users\n" +
	"criteria: {type: composite, operator: and, conditions: [{type: property, property: plan, operator: eq, value: pro}, " +
	"{type: event, eventName: app.active, check: exists, within: 1h}]}\n"

// TestReadmeTypeScriptProducer runs the README's TypeScript push with
// @hatchet-dev/typescript-sdk, in the environment the stack writes, and
// the worker ingests it.
func TestReadmeTypeScriptProducer(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+definitions(t, map[string]string{"active-pro.yaml": activeProBucket}))

	// The SDK is installed once into the stack's folder, from the lock.
	dir, err := filepath.Abs("../.stack/typescript")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for _, f := range []string{"package.json", "package-lock.json"} {
		data, err := os.ReadFile(filepath.Join("typescript", f))
		require.NoError(t, err)
		if old, _ := os.ReadFile(filepath.Join(dir, f)); !bytes.Equal(old, data) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, f), data, 0o644))
			require.NoError(t, os.RemoveAll(filepath.Join(dir, "node_modules")))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err != nil {
		install := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		install.Dir = dir
		out, err := install.CombinedOutput()
		require.NoError(t, err, "npm ci: %s", out)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "push.mjs"), []byte(readmeBlock(t, "typescript-push")), 0o644))

	node := exec.Command("node", "push.mjs")
	node.Dir = dir
	node.Env = os.Environ() // the stack's worker.env, as scripts/test loads it
	out, err := node.CombinedOutput()
	require.NoError(t, err, "node push.mjs: %s", out)
	require.Eventually(t, func() bool { return status(t, conn, "active-pro", "u1") == db.StatusActive },
		time.Minute, 200*time.Millisecond, "the TypeScript push joins u1\n%s", w.Logs())
}

// TestReadmeTriggerByName runs the README's curl that triggers
// bucket-reconcile by name through the REST API: a dry run completes.
func TestReadmeTriggerByName(t *testing.T) {
	_, dbURL := dbtest.New(t)
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+definitions(t, map[string]string{"active-pro.yaml": activeProBucket}))
	began := time.Now()

	curl := exec.Command("bash", "-euo", "pipefail", "-c", readmeBlock(t, "trigger-by-name"))
	curl.Env = os.Environ()
	out, err := curl.CombinedOutput()
	require.NoError(t, err, "%s", out)

	client, err := hatchet.NewClient()
	require.NoError(t, err)
	id := workflowID(t, client, tasks.TaskReconcile)
	var runs struct {
		Rows []struct {
			Status string         `json:"status"`
			Output map[string]any `json:"output"`
		} `json:"rows"`
	}
	require.Eventually(t, func() bool {
		q := url.Values{"since": {began.Add(-time.Minute).UTC().Format(time.RFC3339)}, "only_tasks": {"true"},
			"include_payloads": {"true"}, "workflow_ids": {id.String()}, "additional_metadata": {"by:readme"}}
		hatchetAPI(t, "/api/v1/stable/tenants/"+os.Getenv("HATCHET_TENANT_ID")+"/workflow-runs?"+q.Encode(), &runs)
		return len(runs.Rows) == 1 && runs.Rows[0].Status == "COMPLETED"
	}, time.Minute, time.Second, "the triggered sweep: %s\n%s", out, w.Logs())
	require.Equal(t, true, runs.Rows[0].Output["dryRun"])
}
