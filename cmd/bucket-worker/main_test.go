package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// binary is the bucket-worker built once for the black-box tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bucket-worker-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "bucket-worker")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic("building bucket-worker: " + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// runBinary runs the built binary with a clean environment plus env.
func runBinary(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if exitErr, ok := err.(*exec.ExitError); ok {
		code = exitErr.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{stdout.String(), stderr.String(), code}
}

func TestValidateExamples(t *testing.T) {
	t.Parallel()
	r := runBinary(t, nil, "--definitions", "../../definitions", "validate", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		Valid   bool `json:"valid"`
		Buckets []struct {
			ID             string   `json:"id"`
			CriteriaHash   string   `json:"criteriaHash"`
			TimeBased      bool     `json:"timeBased"`
			ReconcileJoins bool     `json:"reconcileJoins"`
			FastExpiry     bool     `json:"fastExpiry"`
			Enabled        bool     `json:"enabled"`
			EntryLimit     string   `json:"entryLimit"`
			References     []string `json:"references"`
		} `json:"buckets"`
		Journeys []struct {
			ID      string   `json:"id"`
			Trigger string   `json:"trigger"`
			ExitOn  []string `json:"exitOn"`
		} `json:"journeys"`
		Errors []any `json:"errors"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.True(t, out.Valid)
	require.Empty(t, out.Errors)
	require.Len(t, out.Buckets, 8)
	hashes, references := map[string]string{}, map[string][]string{}
	for _, b := range out.Buckets {
		hashes[b.ID], references[b.ID] = b.CriteriaHash, b.References
		require.True(t, b.Enabled, b.ID)
	}
	require.Equal(t, []string{"power-users", "went-dormant"}, references["engaged-not-dormant"])
	require.Empty(t, references["power-users"])
	require.Equal(t, "11804a22b835bdb9d0e61c43e5c570a74f833f3c25b5379695d5bbc6bc3fbb08", hashes["power-users"])
	require.Equal(t, "fed78aea11b2d12190bd2fce09eb761541bf9487cb862b2b26b46b29c37a5a22", hashes["went-dormant"])
	journeys := map[string]int{}
	for i, j := range out.Journeys {
		journeys[j.ID] = i
	}
	winback := out.Journeys[journeys["winback"]]
	require.Equal(t, []string{"bucket:left:went-dormant"}, winback.ExitOn)
	require.Equal(t, "bucket:entered:went-dormant", winback.Trigger)
	require.Equal(t, "bucket:dwell:power-users:after-604800000", out.Journeys[journeys["bucket-power-users-on-dwell-after-604800000"]].Trigger,
		"Hogsend's export of a dwell reaction loads unchanged")
}

func TestValidateEnabledSelection(t *testing.T) {
	t.Parallel()
	r := runBinary(t, []string{"ENABLED_BUCKETS=power-users, nope"}, "--definitions", "../../definitions", "validate", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		Buckets []struct {
			ID      string `json:"id"`
			Enabled bool   `json:"enabled"`
		} `json:"buckets"`
		Warnings []struct {
			Message string `json:"message"`
		} `json:"warnings"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	for _, b := range out.Buckets {
		require.Equal(t, b.ID == "power-users", b.Enabled, b.ID)
	}
	require.Len(t, out.Warnings, 1)
	require.Contains(t, out.Warnings[0].Message, "nope")
}

func TestValidateBrokenDefinitions(t *testing.T) {
	t.Parallel()
	r := runBinary(t, nil, "--definitions", "../../buckets/testdata/broken", "validate")
	require.Equal(t, 1, r.code)
	for _, want := range []string{
		`buckets/a-unknown-key.yaml: criteria.withn: unknown key "withn"`,
		`buckets/b-durations.yaml: [0].criteria.within: invalid duration "2w"`,
		`buckets/b-durations.yaml: [1].criteria.within: duration must be greater than zero`,
		`buckets/c-ids.yaml: [0].id: invalid id "has:colon"`,
		`buckets/d-dup.json: id: duplicate bucket id "dup"`,
		`email_engagement conditions are not allowed in bucket criteria`,
		`reserved bucket:* event "bucket:entered:x"`,
		`a composite needs at least one condition`,
		`criteria must be bounded`,
		`kind:"manual" buckets are not implemented`,
		`maxDwell (12h) must not be shorter than minDwell (2d)`,
		`must be a number with operator "gt"`,
		`fastExpiry needs an event leg with within`,
		`give entryLimit or its older name reentry, not both`,
		`journeys/bad.yaml: color: unknown key "color"`,
		`journeys/dwell-lost.yaml: sourceBucketId: no bucket has id "nowhere"`,
	} {
		require.Contains(t, r.stdout, want)
	}
	require.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one-line reason: %q", r.stderr)
	require.Contains(t, r.stderr, "18 error(s)")

	r = runBinary(t, nil, "--definitions", "../../buckets/testdata/broken", "validate", "--json")
	require.Equal(t, 1, r.code)
	var out struct {
		Valid  bool `json:"valid"`
		Errors []struct {
			File, Path, Message string
		} `json:"errors"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	require.False(t, out.Valid)
	require.Len(t, out.Errors, 18)
	require.Equal(t, "buckets/a-unknown-key.yaml", out.Errors[0].File)
	require.Equal(t, "criteria.withn", out.Errors[0].Path)
}

func TestUsageAndConfigErrors(t *testing.T) {
	t.Parallel()
	require.Equal(t, 2, runBinary(t, nil).code)
	require.Equal(t, 2, runBinary(t, nil, "frobnicate").code)
	require.Equal(t, 2, runBinary(t, nil, "validate", "--nope").code)
	require.Equal(t, 2, runBinary(t, nil, "members").code, "--bucket is required")

	for _, tc := range []struct{ env, variable string }{
		{"BUCKET_RECONCILE_CRON=every minute", "BUCKET_RECONCILE_CRON"},
		{"BUCKET_RECONCILE_TIMEOUT=soon", "BUCKET_RECONCILE_TIMEOUT"},
		{"BUCKET_CONFIG_TTL=-5s", "BUCKET_CONFIG_TTL"},
		{"INGEST_MODE=sometimes", "INGEST_MODE"},
		{"INGEST_EVENTS=auto,bucket:entered:x", "INGEST_EVENTS"},
		{"INGEST_BATCH_EVENT=bucket:batch", "INGEST_BATCH_EVENT"},
		{"MIGRATE=maybe", "MIGRATE"},
		{"LOG_FORMAT=xml", "LOG_FORMAT"},
		{"LOG_LEVEL=loud", "LOG_LEVEL"},
		{"METRICS_ADDR=everywhere", "METRICS_ADDR"},
	} {
		r := runBinary(t, []string{tc.env}, "--definitions", "../../definitions", "run")
		require.Equal(t, 1, r.code, tc.env)
		require.Contains(t, r.stderr, tc.variable+":", tc.env)
		require.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one line: %q", r.stderr)
	}
}

func TestMigrateListMembers(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions"}

	r := runBinary(t, env, "migrate")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "up to date")

	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	email, source := "a@example.com", "event"
	left := now.Add(-time.Hour)
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, []db.Membership{
		{UserID: "u1", UserEmail: &email, BucketID: "power-users", Status: db.StatusLeft, EnteredAt: now.Add(-2 * time.Hour), LeftAt: &left, EntryCount: 1, Source: &source},
		{UserID: "u1", UserEmail: &email, BucketID: "power-users", Status: db.StatusActive, EnteredAt: now.Add(-time.Minute), EntryCount: 2, Source: &source},
		{UserID: "u2", BucketID: "power-users", Status: db.StatusActive, EnteredAt: now, EntryCount: 1, Source: &source},
	}))
	require.NoError(t, db.SetBucketEnabled(ctx, conn, "went-dormant", false, now))

	r = runBinary(t, env, "list", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var list struct {
		Buckets []struct {
			ID             string   `json:"id"`
			RuntimeEnabled bool     `json:"runtimeEnabled"`
			Size           int      `json:"size"`
			Entered        int      `json:"entered"`
			Left           int      `json:"left"`
			FeedsJourneys  []string `json:"feedsJourneys"`
			DwellReactions []struct {
				Label, Schedule string
				Journeys        []string
			} `json:"dwellReactions"`
		} `json:"buckets"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), r.stdout)
	got := map[string]int{}
	for i, b := range list.Buckets {
		got[b.ID] = i
	}
	power := list.Buckets[got["power-users"]]
	require.Equal(t, 2, power.Size)
	require.Equal(t, 3, power.Entered)
	require.Equal(t, 1, power.Left)
	require.True(t, power.RuntimeEnabled)
	require.Len(t, power.DwellReactions, 1)
	require.Equal(t, "after 7d", power.DwellReactions[0].Schedule)
	require.Equal(t, []string{"bucket-power-users-on-dwell-after-604800000"}, power.DwellReactions[0].Journeys)
	require.Equal(t, []string{"bucket-power-users-on-dwell-after-604800000"}, power.FeedsJourneys)
	dormant := list.Buckets[got["went-dormant"]]
	require.False(t, dormant.RuntimeEnabled)
	require.Equal(t, []string{"winback"}, dormant.FeedsJourneys)

	r = runBinary(t, env, "members", "--bucket", "power-users", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var members struct {
		Members []struct {
			UserID     string  `json:"userId"`
			UserEmail  string  `json:"userEmail"`
			Status     string  `json:"status"`
			EntryCount int     `json:"entryCount"`
			LeftAt     *string `json:"leftAt"`
			EnteredAt  string  `json:"enteredAt"`
		} `json:"members"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &members))
	require.Len(t, members.Members, 2)
	require.Equal(t, "u2", members.Members[0].UserID, "newest first")
	require.Equal(t, "u1", members.Members[1].UserID)
	require.Equal(t, 2, members.Members[1].EntryCount)
	require.Equal(t, "a@example.com", members.Members[1].UserEmail)

	r = runBinary(t, env, "members", "--bucket", "power-users", "--status", "left", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &members))
	require.Len(t, members.Members, 1)
	require.NotNil(t, members.Members[0].LeftAt)
	_, err := time.Parse(time.RFC3339, *members.Members[0].LeftAt)
	require.NoError(t, err)

	r = runBinary(t, env, "members", "--bucket", "power-users")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "u2")
}

// push --batch checks every line of its file before it pushes anything,
// and names the bad line.
func TestPushBatchChecksTheFileFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "events.ndjson")
	require.NoError(t, os.WriteFile(file, []byte(`{"event":"app.active","userId":"u1"}`+"\n\n"+
		`{"event":"app.active","userId":"u2","idempotencyKey":"bucket:taken"}`+"\n"), 0o644))
	// No Hatchet is configured: a push would fail with exit 1, not 2.
	r := runBinary(t, nil, "push", "--batch", file)
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "events.ndjson:3: idempotencyKey")

	require.Equal(t, 2, runBinary(t, nil, "push", "--batch", file, "--event", "x").code, "one event or a file, not both")
	require.Equal(t, 2, runBinary(t, nil, "push", "--batch", file, "--batch-size", "1001").code)
	require.Equal(t, 2, runBinary(t, nil, "push", "--batch", filepath.Join(dir, "missing")).code)
}

// A bucket leg naming a bucket ENABLED_BUCKETS leaves out is an error of
// its file and path.
func TestValidateBucketLegOfADisabledBucket(t *testing.T) {
	t.Parallel()
	r := runBinary(t, []string{"ENABLED_BUCKETS=engaged-not-dormant,power-users"}, "--definitions", "../../definitions", "validate", "--json")
	require.Equal(t, 1, r.code, r.stderr)
	var out struct {
		Valid  bool `json:"valid"`
		Errors []struct{ File, Path, Message string }
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.False(t, out.Valid)
	require.Len(t, out.Errors, 1)
	require.Equal(t, "buckets/engaged-not-dormant.yaml", out.Errors[0].File)
	require.Equal(t, "criteria.conditions[1].bucketId", out.Errors[0].Path)
	require.Contains(t, out.Errors[0].Message, `bucket "went-dormant" is not enabled (ENABLED_BUCKETS)`)
}
