package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestReconcileOutboxAndSwitch drives the sweep from the command line
// without Hatchet: the leave commits, its push waits in the outbox, and the
// runtime switch keeps a disabled bucket untouched.
func TestReconcileOutboxAndSwitch(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions"}
	ctx := context.Background()
	now := time.Now()
	require.NoError(t, dbtest.InsertUserEvents(ctx, conn, []db.UserEvent{{UserID: "u1", Event: "app.active", OccurredAt: now.Add(-time.Hour)}}))
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, []db.Membership{
		{UserID: "u1", BucketID: "active-now", Status: db.StatusActive, EnteredAt: now.Add(-2 * time.Hour), EntryCount: 1},
	}))

	r := runBinary(t, env, "disable", "active-now")
	require.Equal(t, 0, r.code, r.stderr)
	r = runBinary(t, env, "reconcile", "--bucket", "active-now", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		Reconciled int `json:"reconciled"`
		Pending    int `json:"pending"`
		Buckets    []struct {
			BucketID string `json:"bucketId"`
			Left     int    `json:"left"`
			Skipped  string `json:"skipped"`
		} `json:"buckets"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.Equal(t, "bucket_disabled", out.Buckets[0].Skipped)
	require.Equal(t, 0, out.Reconciled)

	r = runBinary(t, env, "enable", "active-now")
	require.Equal(t, 0, r.code, r.stderr)
	r = runBinary(t, env, "reconcile", "--bucket", "active-now", "--dry-run", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var dry struct {
		Buckets []struct {
			WouldLeave    int      `json:"wouldLeave"`
			SampleUserIDs []string `json:"sampleUserIds"`
		} `json:"buckets"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &dry), r.stdout)
	require.Equal(t, 1, dry.Buckets[0].WouldLeave)
	require.Equal(t, []string{"u1"}, dry.Buckets[0].SampleUserIDs)

	r = runBinary(t, env, "reconcile", "--bucket", "active-now", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.Equal(t, 1, out.Reconciled)
	require.Equal(t, 1, out.Buckets[0].Left)
	require.Equal(t, 1, out.Pending, "no Hatchet configured: the push waits in the outbox")

	r = runBinary(t, env, "outbox", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var box struct {
		Pending    int     `json:"pending"`
		Age        float64 `json:"oldestPendingAgeSeconds"`
		LastErrors []any   `json:"lastErrors"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &box), r.stdout)
	require.Equal(t, 1, box.Pending)
	require.GreaterOrEqual(t, box.Age, 0.0)
	require.Empty(t, box.LastErrors)

	r = runBinary(t, env, "reconcile")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "joins skipped: backfill_missing")
	require.Contains(t, r.stdout, "1 pending in the outbox")
}

func TestEngineCommandUsageErrors(t *testing.T) {
	t.Parallel()
	_, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions"}
	for _, args := range [][]string{
		{"reconcile", "--bucket", "no-such-bucket"},
		{"disable"},
		{"disable", "no-such-bucket"},
		{"enable", "a", "b"},
		{"outbox", "extra"},
	} {
		r := runBinary(t, env, args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
		require.NotEmpty(t, r.stderr)
	}
	r := runBinary(t, env, "outbox", "--flush")
	require.Equal(t, 1, r.code, "--flush needs Hatchet: %s", r.stdout)
	require.Contains(t, r.stderr, "HATCHET_CLIENT_TOKEN")
}

func TestMalformedDatabaseURLIsAnErrorNotAPanic(t *testing.T) {
	t.Parallel()
	r := runBinary(t, []string{"DATABASE_URL=mysql://localhost/x"}, "migrate")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "invalid database URL")
	require.NotContains(t, r.stderr, "panic")
}

func TestIngestAndExpireCommands(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions"}

	r := runBinary(t, env, "ingest", "--event", "app.active", "--user", "u1", "--email", "U1@Example.com", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		Stored      bool `json:"stored"`
		Transitions []struct {
			BucketID   string `json:"bucketId"`
			Transition string `json:"transition"`
		} `json:"transitions"`
		Exited []string `json:"exited"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.True(t, out.Stored)
	require.Len(t, out.Transitions, 1)
	require.Equal(t, "active-now", out.Transitions[0].BucketID)
	require.Equal(t, "entered", out.Transitions[0].Transition)

	rows, err := dbtest.ListOutbox(context.Background(), conn)
	require.NoError(t, err)
	var arm string
	for _, row := range rows {
		if row.EventKey == "bucket:arm-expiry" {
			arm = string(row.Payload)
		}
	}
	require.NotEmpty(t, arm, "the join armed a timer")
	r = runBinary(t, env, "expire", "--payload", arm, "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.JSONEq(t, `{"status":"skipped","reason":"still_member"}`, r.stdout)

	for _, args := range [][]string{
		{"ingest", "--event", "app.active", "--user", "u1", "--properties", "[1]"},
		{"ingest", "--event", "app.active", "--user", "u1", "--properties", "{"},
		{"ingest", "--event", "app.active"},
		{"ingest", "--user", "u1"},
		{"ingest", "--event", "app.active", "--user", "u1", "--occurred-at", "noon"},
		// The input rules of contract §7, on the command line.
		{"ingest", "--event", "app.active", "--user", "c\xff"},
		{"ingest", "--event", "app\xfe", "--user", "u1"},
		{"ingest", "--event", "app.active", "--user", strings.Repeat("u", 513)},
		{"ingest", "--event", "app.active", "--user", "u1", "--idempotency-key", ""},
		{"ingest", "--event", "app.active", "--user", "u1", "--idempotency-key", "bucket:active-now:u1:entered:9"},
		{"ingest", "--event", "app.active", "--user", "u1", "--properties", `{"a":"\u0000"}`},
		{"ingest", "--event", "app.active", "--user", "u1", "--occurred-at", "0000-01-01T00:00:00Z"},
		{"expire", "--payload", `{"rowId":"nope"}`},
		{"expire"},
	} {
		r := runBinary(t, env, args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
		require.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one line: %q", r.stderr)
	}
	var stored int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM user_events WHERE source = 'ingest'").Scan(context.Background(), &stored))
	require.Equal(t, 1, stored, "no invalid ingest stored anything")
	r = runBinary(t, env, "ingest", "--event", "bucket:left:x", "--user", "u1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "reserved_prefix")
}

func TestBackfillCommand(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions"}
	ctx := context.Background()
	contacts := dbtest.Contacts([]string{"t1", "t2"}, `{"plan":"trial","trial_days_left":2}`)
	contacts[1].Properties = json.RawMessage(`{"plan":"pro"}`)
	require.NoError(t, dbtest.InsertContacts(ctx, conn, contacts))

	r := runBinary(t, env, "backfill", "--bucket", "trial-expiring-soon", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		JobID, BucketID, Mode, Status string
		Joined, Left                  int
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.NotEmpty(t, out.JobID)
	require.Equal(t, "first-time", out.Mode)
	require.Equal(t, "completed", out.Status)
	require.Equal(t, 1, out.Joined)

	r = runBinary(t, env, "backfill", "--bucket", "trial-expiring-soon", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.Equal(t, "up_to_date", out.Status, "auto: the hash is current")

	r = runBinary(t, env, "backfill", "--bucket", "trial-expiring-soon", "--mode", "reeval")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "completed (reeval)")

	for _, args := range [][]string{
		{"backfill"}, {"backfill", "--bucket", "nope"}, {"backfill", "--bucket", "power-users", "--mode", "sometimes"},
	} {
		require.Equal(t, 2, runBinary(t, env, args...).code, "%v", args)
	}
	var jobs int
	require.NoError(t, conn.NewRaw("SELECT count(*) FROM import_jobs WHERE status = 'completed'").Scan(ctx, &jobs))
	require.Equal(t, 2, jobs)
}

func TestForgetCommand(t *testing.T) {
	t.Parallel()
	_, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions"}
	r := runBinary(t, env, "ingest", "--event", "app.active", "--user", "f1")
	require.Equal(t, 0, r.code, r.stderr)
	r = runBinary(t, env, "forget", "--user", "f1", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.JSONEq(t, `{"userId":"f1","contacts":1,"memberships":1}`, r.stdout)
	r = runBinary(t, env, "ingest", "--event", "app.active", "--user", "f1", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "contact_deleted")
	require.Equal(t, 2, runBinary(t, env, "forget").code)
}

func TestHistoryAfterIngestExpiryAndSweep(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "buckets"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "buckets", "blink.yaml"), []byte("id: blink\nname: Blink\nfastExpiry: true\n"+
		"criteria: {type: event, eventName: ping, check: exists, within: 1s}\n"), 0o644))
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir}
	ctx := context.Background()
	run := func(args ...string) string {
		r := runBinary(t, env, args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
		return r.stdout
	}

	run("ingest", "--event", "ping", "--user", "h1") // joins, epoch 1, arms a timer
	var arm string
	require.NoError(t, conn.NewRaw("SELECT payload::text FROM bucket_event_outbox WHERE event_key = 'bucket:arm-expiry'").Scan(ctx, &arm))
	time.Sleep(1100 * time.Millisecond)
	require.Contains(t, run("expire", "--payload", arm), "left") // the timer leaves epoch 1
	run("ingest", "--event", "ping", "--user", "h1")             // rejoins, epoch 2
	time.Sleep(1100 * time.Millisecond)
	require.Contains(t, run("reconcile"), "left 1") // the sweep leaves epoch 2

	var out struct {
		Memberships []struct {
			BucketID   string `json:"bucketId"`
			Status     string `json:"status"`
			EntryCount int    `json:"entryCount"`
			Source     string `json:"source"`
		} `json:"memberships"`
		Events []struct {
			Event          string         `json:"event"`
			IdempotencyKey string         `json:"idempotencyKey"`
			Properties     map[string]any `json:"properties"`
			Dispatched     bool           `json:"dispatched"`
		} `json:"events"`
	}
	require.NoError(t, json.Unmarshal([]byte(run("history", "--user", "h1", "--json")), &out))
	require.Len(t, out.Memberships, 2)
	for i, m := range out.Memberships {
		require.Equal(t, "blink", m.BucketID)
		require.Equal(t, i+1, m.EntryCount, "oldest first")
		require.Equal(t, "left", m.Status)
		require.Equal(t, "event", m.Source)
	}
	var keys, sources []string
	for _, e := range out.Events {
		keys = append(keys, e.IdempotencyKey)
		sources = append(sources, e.Properties["source"].(string))
		require.False(t, e.Dispatched, "no Hatchet: every push is pending")
	}
	require.Equal(t, []string{"bucket:blink:h1:entered:1", "bucket:blink:h1:left:1", "bucket:blink:h1:entered:2", "bucket:blink:h1:left:2"}, keys)
	require.Equal(t, []string{"event", "reconcile", "event", "reconcile"}, sources)
	require.Contains(t, run("history", "--user", "h1", "--bucket", "other"), "BUCKET")
	require.Equal(t, 2, runBinary(t, env, "history").code)
}

func TestExplainCommand(t *testing.T) {
	t.Parallel()
	_, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions"}
	require.Equal(t, 0, runBinary(t, env, "ingest", "--event", "app.active", "--user", "x1").code)

	r := runBinary(t, env, "explain", "--user", "x1", "--bucket", "active-now", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var ex map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ex), r.stdout)
	for _, key := range []string{"bucketId", "userId", "member", "verdict", "leaves", "membership", "runtimeEnabled", "next"} {
		require.Contains(t, ex, key)
	}
	require.Equal(t, true, ex["member"])
	require.Equal(t, true, ex["verdict"])
	require.Equal(t, "stay", ex["next"])
	leaves := ex["leaves"].([]any)
	require.Len(t, leaves, 1)
	l := leaves[0].(map[string]any)
	for _, key := range []string{"path", "type", "observed", "result"} {
		require.Contains(t, l, key)
	}

	r = runBinary(t, env, "explain", "--user", "x1", "--bucket", "went-dormant")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "is not a member of went-dormant")
	require.Contains(t, r.stdout, "next sweep: none")
	require.Equal(t, 2, runBinary(t, env, "explain", "--user", "x1", "--bucket", "nope").code)
	require.Equal(t, 2, runBinary(t, env, "explain", "--user", "x1").code)

	// A property beyond the double range reads as Infinity (contract
	// §3.1), which JSON carries as a string beside jsonType number.
	require.Equal(t, 0, runBinary(t, env, "ingest", "--event", "contact:updated", "--user", "x2",
		"--contact-properties", `{"plan":"trial","trial_days_left":-1e999}`).code)
	r = runBinary(t, env, "explain", "--user", "x2", "--bucket", "trial-expiring-soon", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"value": "-Infinity"`)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ex), r.stdout)
	require.Equal(t, true, ex["verdict"], "-Infinity <= 3")
}

// An ingest evaluates where, aggregates and relative dates in real time,
// and explain says in words what each leg read.
func TestExplainCommandShowsFiltersAggregatesAndDates(t *testing.T) {
	t.Parallel()
	_, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions"}
	ends := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	r := runBinary(t, env, "ingest", "--event", "purchase", "--user", "p1", "--json",
		"--properties", `{"plan":"pro","amount":120}`, "--contact-properties", `{"plan":"trial","trial_ends_at":"`+ends+`"}`)
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		Transitions []struct{ BucketID, Transition string }
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	joined := map[string]string{}
	for _, tr := range out.Transitions {
		joined[tr.BucketID] = tr.Transition
	}
	// A sum and a relative date join in real time; one pro purchase of
	// three does not.
	require.Equal(t, map[string]string{"big-spenders": "entered", "trial-ending-soon": "entered"}, joined)

	r = runBinary(t, env, "explain", "--user", "p1", "--bucket", "pro-buyers")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "1 of 1 event(s) passed where")
	r = runBinary(t, env, "explain", "--user", "p1", "--bucket", "big-spenders")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "aggregate 120 over 1 value(s)")
	r = runBinary(t, env, "explain", "--user", "p1", "--bucket", "trial-ending-soon")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, ends+" ("+"string) = "+ends)
	require.Contains(t, r.stdout, "; window ")
}

// TestDwellFromTheCommandLine: the example reaction journey fires a week
// into power-users; reconcile counts it, history and explain show it.
func TestDwellFromTheCommandLine(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=../../definitions", "ENABLED_BUCKETS=power-users"}
	ctx := context.Background()
	now := time.Now()
	users := []string{"d1"}
	require.NoError(t, dbtest.InsertContacts(ctx, conn, dbtest.Contacts(users, `{}`)))
	require.NoError(t, dbtest.InsertUserEvents(ctx, conn, slices.Repeat(dbtest.Events(users, "key.action", now.Add(-time.Hour)), 10)))
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, dbtest.Members(users, "power-users", now.Add(-8*24*time.Hour))))
	require.Equal(t, 0, runBinary(t, env, "backfill", "--bucket", "power-users").code, "opens the first-deploy guard")

	r := runBinary(t, env, "reconcile", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var sweep struct {
		DwellFired int `json:"dwellFired"`
		Buckets    []struct {
			BucketID   string `json:"bucketId"`
			DwellFired int    `json:"dwellFired"`
		} `json:"buckets"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &sweep), r.stdout)
	require.Equal(t, 1, sweep.DwellFired)
	require.Equal(t, 1, sweep.Buckets[0].DwellFired)

	r = runBinary(t, env, "history", "--user", "d1", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var history struct {
		Memberships []struct {
			DwellState map[string]string `json:"dwellState"`
		} `json:"memberships"`
		Events []struct {
			Event          string         `json:"event"`
			IdempotencyKey string         `json:"idempotencyKey"`
			Properties     map[string]any `json:"properties"`
		} `json:"events"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &history), r.stdout)
	require.Len(t, history.Events, 1)
	require.Equal(t, "bucket:dwell:power-users:after-604800000", history.Events[0].Event)
	require.Equal(t, "bucket:power-users:d1:dwell:after-604800000:1", history.Events[0].IdempotencyKey)
	require.Equal(t, 1.0, history.Events[0].Properties["dwellCount"])
	require.Contains(t, history.Memberships[0].DwellState, "after-604800000")
	require.Contains(t, runBinary(t, env, "history", "--user", "d1").stdout, "dwell #1")

	r = runBinary(t, env, "explain", "--user", "d1", "--bucket", "power-users")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "dwell after-604800000 (after 7d, for bucket-power-users-on-dwell-after-604800000): last fired")
	require.Contains(t, r.stdout, "fired for this membership")
}
