//go:build e2e && slow

package e2e

import (
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v0 "github.com/hatchet-dev/hatchet/pkg/client"
	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/stretchr/testify/require"
)

// ownStack is a Hatchet server of the test's own — its own ports,
// database and folder — started and stopped with scripts/stack, so that
// restarting or loading it disturbs nothing else. Tests that use one run
// one after another.
type ownStack struct {
	t   *testing.T
	env []string
}

func newOwnStack(t *testing.T) *ownStack {
	s := &ownStack{t: t, env: append(os.Environ(),
		"STACK_DIR="+t.TempDir(), "HATCHET_DB=hatchet_e2e_own", "STACK_DASHBOARD=off",
		"HATCHET_API_PORT=18180", "HATCHET_GRPC_PORT=17177", "HATCHET_HEALTH_PORT=18833",
		"HATCHET_FRONTEND_PORT=18181", "HATCHET_RUNTIME_PORT=18182")}
	s.run("reset")
	t.Cleanup(func() { s.run("down") })
	return s
}

func (s *ownStack) run(verb string) {
	s.t.Helper()
	cmd := exec.Command("../scripts/stack", verb)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	require.NoError(s.t, err, "scripts/stack %s: %s", verb, out)
}

// workerEnv is the environment the stack wrote for a worker.
func (s *ownStack) workerEnv() map[string]string {
	s.t.Helper()
	dir := ""
	for _, kv := range s.env {
		if v, ok := strings.CutPrefix(kv, "STACK_DIR="); ok {
			dir = v
		}
	}
	env, err := readEnvFile(filepath.Join(dir, "worker.env"))
	require.NoError(s.t, err)
	return env
}

func (s *ownStack) hatchetVars() []string {
	env := s.workerEnv()
	return []string{"HATCHET_CLIENT_TOKEN=" + env["HATCHET_CLIENT_TOKEN"], "HATCHET_API_URL=" + env["HATCHET_API_URL"]}
}

func (s *ownStack) client() *hatchet.Client {
	s.t.Helper()
	c, err := hatchet.NewClient(v0.WithToken(s.workerEnv()["HATCHET_CLIENT_TOKEN"]))
	require.NoError(s.t, err)
	return c
}

// pushedEvents counts the events of the key that reached the stack's
// Hatchet, by their idempotency key.
func (s *ownStack) pushedEvents(key string) map[string]int {
	s.t.Helper()
	env := s.workerEnv()
	return pushedEvents(s.t, env["HATCHET_API_URL"], env["HATCHET_CLIENT_TOKEN"], env["HATCHET_TENANT_ID"], key)
}

// taskCounts counts the runs of a task since since, by status, as
// Hatchet's task metrics give them.
func (s *ownStack) taskCounts(taskName string, since time.Time) map[string]int {
	s.t.Helper()
	id := workflowID(s.t, s.client(), taskName)
	var metrics []struct {
		Status string `json:"status"`
		Count  int    `json:"count"`
	}
	env := s.workerEnv()
	q := url.Values{"since": {since.UTC().Format(time.RFC3339)}, "workflow_ids": {id.String()}}
	hatchetAPIOf(s.t, env["HATCHET_API_URL"], env["HATCHET_CLIENT_TOKEN"],
		"/api/v1/stable/tenants/"+env["HATCHET_TENANT_ID"]+"/task-metrics?"+q.Encode(), &metrics)
	out := map[string]int{}
	for _, m := range metrics {
		if m.Count > 0 {
			out[m.Status] = m.Count
		}
	}
	return out
}

// runsOf lists the runs of a task whose additional metadata has userId,
// with their status and output.
func (s *ownStack) runsOf(taskName, userID string, since time.Time) []struct {
	Status string         `json:"status"`
	Output map[string]any `json:"output"`
} {
	s.t.Helper()
	id := workflowID(s.t, s.client(), taskName)
	var page struct {
		Rows []struct {
			Status string         `json:"status"`
			Output map[string]any `json:"output"`
		} `json:"rows"`
	}
	env := s.workerEnv()
	q := url.Values{"since": {since.UTC().Format(time.RFC3339)}, "only_tasks": {"true"}, "include_payloads": {"true"},
		"workflow_ids": {id.String()}, "additional_metadata": {"userId:" + userID}}
	hatchetAPIOf(s.t, env["HATCHET_API_URL"], env["HATCHET_CLIENT_TOKEN"],
		"/api/v1/stable/tenants/"+env["HATCHET_TENANT_ID"]+"/workflow-runs?"+q.Encode(), &page)
	return page.Rows
}
