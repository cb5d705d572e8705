package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// requireOneLine checks a failure's stderr: one line, no panic, no secret.
func requireOneLine(t *testing.T, r result, secret string) {
	t.Helper()
	require.Equal(t, 1, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one line: %q", r.stderr)
	require.NotContains(t, r.stderr, "goroutine ")
	require.NotContains(t, r.stderr, "panic")
	if secret != "" {
		require.NotContains(t, r.stderr+r.stdout, secret)
	}
}

// TestMalformedConnectionSettings: a malformed DATABASE_URL or
// HATCHET_CLIENT_TOKEN is one line naming the variable, without the
// secret, never a panic.
func TestMalformedConnectionSettings(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"postgres://bw:s3cret-pass@127.0.0.1:notaport/db",
		"postgres://bw:s3cret-pass@[::1/db",
		"mysql://bw:s3cret-pass@host/db",
	} {
		r := runBinary(t, []string{"DATABASE_URL=" + url}, "--definitions", "../../definitions", "list")
		requireOneLine(t, r, "s3cret-pass")
		require.Contains(t, r.stderr, "DATABASE_URL")
	}
	_, url := dbtest.New(t)
	for _, token := range []string{"not-a-token", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.sig-s3cret-pass"} {
		for _, cmd := range []string{"run", "reconcile"} {
			r := runBinary(t, []string{"DATABASE_URL=" + url, "HATCHET_CLIENT_TOKEN=" + token}, "--definitions", "../../definitions", cmd)
			requireOneLine(t, r, token)
			require.Contains(t, r.stderr, "HATCHET_CLIENT_TOKEN is not a Hatchet API token", cmd)
		}
	}
}

// TestNoPasswordInAnyFormOfTheDatabaseURL writes DATABASE_URL in every
// form it takes — URL user info, a password query parameter, keyword/value
// pairs, a quoted value — with a wrong value in each field in turn, and
// runs commands that fail on it (and run, which logs): the password never
// shows in stdout or stderr, as written or as it decodes.
func TestNoPasswordInAnyFormOfTheDatabaseURL(t *testing.T) {
	t.Parallel()
	const pw = "Pw-s3cret 7/Q@x'y"
	enc := url.QueryEscape(pw)
	secrets := []string{pw, enc, url.PathEscape(pw), "s3cret"}
	type field struct{ name, good, bad string }
	fields := []field{{"host", "127.0.0.1", "no-such-host.invalid"}, {"port", "5432", "1"}, {"badport", "5432", "notaport"},
		{"user", "bucket_worker", "nobody"}, {"dbname", "bucket_worker", "no_such_db"}, {"sslmode", "disable", "bogus"},
		{"password", "", ""}}
	forms := map[string]func(v map[string]string) string{
		"userinfo": func(v map[string]string) string {
			return "postgres://" + v["user"] + ":" + enc + "@" + v["host"] + ":" + v["port"] + "/" + v["dbname"] + "?sslmode=" + v["sslmode"]
		},
		"query": func(v map[string]string) string {
			return "postgres://" + v["user"] + "@" + v["host"] + ":" + v["port"] + "/" + v["dbname"] + "?sslmode=" + v["sslmode"] + "&password=" + enc
		},
		"keyword": func(v map[string]string) string {
			return "host=" + v["host"] + " port=" + v["port"] + " user=" + v["user"] + " dbname=" + v["dbname"] +
				" sslmode=" + v["sslmode"] + " password='" + strings.ReplaceAll(pw, "'", `\'`) + "'"
		},
		"keyword, unquoted": func(v map[string]string) string {
			return "password=" + strings.NewReplacer(" ", "", "'", "").Replace(pw) + " host=" + v["host"] + " port=" + v["port"] +
				" user=" + v["user"] + " dbname=" + v["dbname"] + " sslmode=" + v["sslmode"]
		},
	}
	secrets = append(secrets, strings.NewReplacer(" ", "", "'", "").Replace(pw))
	for name, form := range forms {
		for _, wrong := range fields {
			v := map[string]string{}
			for _, f := range fields {
				v[strings.TrimPrefix(f.name, "bad")] = f.good
			}
			if wrong.bad != "" {
				v[strings.TrimPrefix(wrong.name, "bad")] = wrong.bad
			}
			dsn := form(v)
			for _, args := range [][]string{{"list"}, {"migrate"}, {"--log-level", "debug", "reconcile", "--json"}} {
				r := runBinary(t, []string{"DATABASE_URL=" + dsn, "PGCONNECT_TIMEOUT=2"}, append([]string{"--definitions", "../../definitions"}, args...)...)
				require.Equal(t, 1, r.code, "%s, wrong %s, %v: %s", name, wrong.name, args, r.stderr)
				for _, secret := range secrets {
					require.NotContains(t, r.stdout+r.stderr, secret, "%s, wrong %s, %v", name, wrong.name, args)
				}
			}
			r := runBinary(t, nil, "--database-url", dsn, "--definitions", "../../definitions", "list")
			require.Equal(t, 1, r.code)
			for _, secret := range secrets {
				require.NotContains(t, r.stdout+r.stderr, secret, "--database-url, %s, wrong %s", name, wrong.name)
			}
		}
	}
}

// TestReconcileWithAFailingBucket: one bucket's leave cannot take its
// lock in time; the other bucket is still swept, the JSON still printed,
// and the command exits 1.
func TestReconcileWithAFailingBucket(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	ctx := context.Background()
	var name string
	require.NoError(t, conn.NewRaw("SELECT current_database()").Scan(ctx, &name))
	_, err := conn.ExecContext(ctx, "ALTER DATABASE "+name+" SET lock_timeout = '500ms'")
	require.NoError(t, err)

	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "buckets"), 0o755))
	for _, id := range []string{"ok", "stuck"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "buckets", id+".yaml"), []byte("id: "+id+"\nname: "+id+"\n"+
			"criteria: {type: event, eventName: "+id+".seen, check: exists, within: 1h}\n"), 0o644))
	}
	now := time.Now()
	for _, id := range []string{"ok", "stuck"} {
		require.NoError(t, dbtest.InsertMemberships(ctx, conn, []db.Membership{{UserID: "u-" + id, BucketID: id,
			Status: db.StatusActive, EnteredAt: now.Add(-3 * time.Hour), EntryCount: 1}}))
	}
	tx, err := conn.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck // the lock is only held for the test
	_, err = tx.ExecContext(ctx, "SELECT 1 FROM bucket_memberships WHERE bucket_id = 'stuck' FOR UPDATE")
	require.NoError(t, err)

	r := runBinary(t, []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir}, "reconcile", "--json")
	require.Equal(t, 1, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, `reconciling stuck failed`)
	var out struct {
		Reconciled int `json:"reconciled"`
		Buckets    []struct {
			BucketID string `json:"bucketId"`
			Left     int    `json:"left"`
			Error    string `json:"error"`
		} `json:"buckets"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.Equal(t, 1, out.Reconciled)
	require.Len(t, out.Buckets, 2)
	require.Equal(t, "ok", out.Buckets[0].BucketID)
	require.Equal(t, 1, out.Buckets[0].Left)
	require.Empty(t, out.Buckets[0].Error)
	require.Contains(t, out.Buckets[1].Error, "lock timeout")
}

// TestKilledBackfillIsTakenOver kills a backfill from the command line
// with SIGKILL midway. Until its job is dead (no progress for twice
// BUCKET_BACKFILL_TIMEOUT) the next backfill of the bucket is refused;
// then it fails the dead job and finishes, with exactly the matchers as
// members.
func TestKilledBackfillIsTakenOver(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	ctx := context.Background()
	const matchers = 60_000
	require.NoError(t, dbtest.InsertContacts(ctx, conn, dbtest.Contacts(dbtest.Users("u", matchers), `{"plan":"pro"}`)))
	require.NoError(t, dbtest.InsertContacts(ctx, conn, dbtest.Contacts(dbtest.Users("free", 1000), `{"plan":"free"}`)))
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "buckets"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "buckets", "pro.yaml"),
		[]byte("id: pro\nname: Pro\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n"), 0o644))
	env := []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir, "BUCKET_BACKFILL_TIMEOUT=1s"}
	count := func(query string) int {
		var n int
		require.NoError(t, conn.NewRaw(query).Scan(ctx, &n))
		return n
	}

	cmd := exec.Command(binary, "backfill", "--bucket", "pro")
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { return count("SELECT count(*) FROM bucket_memberships") > 0 },
		30*time.Second, 5*time.Millisecond, "the backfill started joining: %s", &stderr)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	joined := count("SELECT count(*) FROM bucket_memberships")
	require.Less(t, joined, matchers, "killed midway")
	require.Equal(t, 1, count("SELECT count(*) FROM import_jobs WHERE status = 'processing'"))

	r := runBinary(t, env[1:], "backfill", "--bucket", "pro")
	require.Equal(t, 1, r.code, "the job is not dead yet: %s%s", r.stdout, r.stderr)
	require.Contains(t, r.stderr, "pending or processing")

	time.Sleep(2100 * time.Millisecond) // twice BUCKET_BACKFILL_TIMEOUT without progress
	r = runBinary(t, env[1:], "backfill", "--bucket", "pro", "--json")
	require.Equal(t, 0, r.code, "%s%s", r.stdout, r.stderr)
	require.Contains(t, r.stdout, `"status": "completed"`)
	require.Equal(t, matchers, count("SELECT count(*) FROM bucket_memberships WHERE status = 'active'"), "exactly the matchers")
	require.Equal(t, matchers, count("SELECT count(DISTINCT user_id) FROM bucket_memberships"))
	require.Zero(t, count("SELECT count(*) FROM bucket_memberships WHERE user_id LIKE 'free%'"))
	require.Equal(t, 1, count("SELECT count(*) FROM import_jobs WHERE status = 'failed'"), "the dead job")
	require.Equal(t, 1, count("SELECT count(*) FROM import_jobs WHERE status = 'completed'"))
}
