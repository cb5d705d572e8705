package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// destinationDir is a definitions folder with the pro bucket and the
// destination files.
func destinationDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, sub := range []string{"buckets", "destinations"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, sub), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "buckets", "pro.yaml"),
		[]byte("id: pro\nname: Pro\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n"), 0o644))
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "destinations", name), []byte(content), 0o644))
	}
	return dir
}

func newSecret(t *testing.T) string {
	key := make([]byte, 24)
	_, err := rand.Read(key)
	require.NoError(t, err)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// TestDestinationConfigErrors: each bad destination is a one-line error
// at boot naming its file and field, or its variable, and a secret is
// never printed.
func TestDestinationConfigErrors(t *testing.T) {
	t.Parallel()
	_, url := dbtest.New(t)
	secret := newSecret(t)
	for _, tc := range []struct {
		name, file string
		env        []string
		want       string
	}{
		// A definition is checked by validate, with its file and path; a
		// secret when the engine starts, with its variable.
		{"scheme", "id: crm\nurl: ftp://hooks.example.com\nevents: [bucket.entered]\nsecretEnv: CRM_SECRET\n", nil,
			`destinations/crm.yaml: url: the URL must be http(s), not "ftp"`},
		{"plain http", "id: crm\nurl: http://hooks.example.com/x\nevents: [bucket.entered]\nsecretEnv: CRM_SECRET\n", nil,
			"destinations/crm.yaml: url: plain http only to a loopback host"},
		{"event", "id: crm\nurl: https://hooks.example.com\nevents: [bucket.dwell]\nsecretEnv: CRM_SECRET\n", nil,
			`destinations/crm.yaml: events[0]: unknown event type "bucket.dwell"`},
		{"bucket", "id: crm\nurl: https://hooks.example.com\nevents: [bucket.left]\nbuckets: [pro, nope]\nsecretEnv: CRM_SECRET\n", nil,
			`destinations/crm.yaml: buckets[1]: no bucket has id "nope"`},
		{"secret in the file", "id: crm\nurl: https://hooks.example.com\nevents: [bucket.left]\nsecretEnv: " + secret + "\n", nil,
			"destinations/crm.yaml: secretEnv: must name an environment variable"},
		{"missing secret", "id: crm\nurl: https://hooks.example.com\nevents: [bucket.left]\nsecretEnv: CRM_SECRET\n", nil,
			"destination crm: CRM_SECRET is not set"},
		{"malformed secret", "id: crm\nurl: https://hooks.example.com\nevents: [bucket.left]\nsecretEnv: CRM_SECRET\n",
			[]string{"CRM_SECRET=" + strings.TrimPrefix(secret, "whsec_")}, "destination crm: CRM_SECRET must hold whsec_ and the base64"},
		{"bad base64", "id: crm\nurl: https://hooks.example.com\nevents: [bucket.left]\nsecretEnv: CRM_SECRET\n",
			[]string{"CRM_SECRET=whsec_%%%" + secret[6:]}, "destination crm: CRM_SECRET must hold whsec_ and the base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := destinationDir(t, map[string]string{"crm.yaml": tc.file})
			command := "validate"
			if strings.HasPrefix(tc.want, "destination crm:") {
				command = "reconcile"
			}
			r := runBinary(t, append([]string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir}, tc.env...), command)
			require.Equal(t, 1, r.code, r.stdout)
			require.Contains(t, r.stderr+r.stdout, tc.want)
			require.NotContains(t, r.stderr+r.stdout, secret[6:], "a secret is never printed")
			require.NotContains(t, r.stderr, "goroutine", "no panic")
			if command == "reconcile" {
				require.Equal(t, 1, strings.Count(strings.TrimSpace(r.stderr), "\n")+1, "one line: %q", r.stderr)
			}
		})
	}
}

// TestDeliveryOutlivesAKilledCommand kills -9 a command while it delivers,
// after its transaction committed: once the delivery's lease lapses, the
// next command delivers it — the same event, signed again.
func TestDeliveryOutlivesAKilledCommand(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	var mu sync.Mutex
	var ids []string
	arrived := make(chan struct{}, 10)
	hang := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		mu.Lock()
		ids = append(ids, req.Header.Get("webhook-id"))
		stuck := hang
		mu.Unlock()
		arrived <- struct{}{}
		if stuck {
			<-req.Context().Done()
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	dir := destinationDir(t, map[string]string{"crm.yaml": "id: crm\nurl: " + srv.URL + "\nevents: [bucket.entered]\nsecretEnv: CRM_SECRET\n"})
	env := []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir, "CRM_SECRET=" + newSecret(t)}

	ingest := exec.Command(binary, "ingest", "--event", "app.active", "--user", "u", "--contact-properties", `{"plan":"pro"}`)
	ingest.Env = env
	require.NoError(t, ingest.Start())
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("the delivery never arrived")
	}
	require.NoError(t, ingest.Process.Signal(syscall.SIGKILL))
	_ = ingest.Wait()
	mu.Lock()
	hang = false
	mu.Unlock()

	ctx := context.Background()
	var pending []db.Delivery
	require.NoError(t, conn.NewSelect().Model(&pending).Scan(ctx))
	require.Len(t, pending, 1, "the delivery was committed with the join")
	require.Nil(t, pending[0].DeliveredAt)
	require.Eventually(t, func() bool {
		r := runBinary(t, env[1:], "reconcile", "--json")
		require.Equal(t, 0, r.code, r.stderr)
		var out struct{ Delivered int }
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
		return out.Delivered == 1
	}, 30*time.Second, time.Second, "delivered once its lease lapsed")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, ids, 2)
	require.Equal(t, ids[0], ids[1], "the same event")
}

// TestDestinationsCommands: destinations lists each destination with its
// deliveries, destinations test sends a signed webhook.test, and outbox
// shows and retries what is dead.
func TestDestinationsCommands(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	var mu sync.Mutex
	var kinds []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body struct{ Type string }
		_ = json.NewDecoder(req.Body).Decode(&body)
		mu.Lock()
		kinds = append(kinds, body.Type)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	dir := destinationDir(t, map[string]string{"crm.yaml": "id: crm\nurl: " + srv.URL + "\nevents: [bucket.entered]\nsecretEnv: CRM_SECRET\n"})
	env := []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir, "CRM_SECRET=" + newSecret(t)}

	r := runBinary(t, env, "destinations", "test", "crm")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "crm answered 202\n", r.stdout)
	require.Equal(t, 2, runBinary(t, env, "destinations", "test", "nope").code)

	ctx := context.Background()
	_, err := conn.NewRaw(`INSERT INTO bucket_event_deliveries (destination, user_id, bucket_id, idempotency_key, payload, attempts, dead_at, last_error)
		VALUES ('crm', 'u', 'pro', 'bucket:pro:u:entered:1', '{"id":"msg_x","type":"bucket.entered"}', 15, now(), 'crm answered 503')`).Exec(ctx)
	require.NoError(t, err)
	r = runBinary(t, env, "destinations", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var list struct {
		Destinations []struct {
			ID        string  `json:"id"`
			Kind      string  `json:"kind"`
			Dead      int     `json:"dead"`
			LastError *string `json:"lastError"`
		} `json:"destinations"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), r.stdout)
	require.Len(t, list.Destinations, 1)
	require.Equal(t, "crm", list.Destinations[0].ID)
	require.Equal(t, "webhook", list.Destinations[0].Kind)
	require.Equal(t, 1, list.Destinations[0].Dead)

	r = runBinary(t, env, "outbox")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "destination crm: pending 0, dead 1, last error: crm answered 503")
	require.Equal(t, 2, runBinary(t, env, "outbox", "--destination", "crm").code, "--destination goes with --retry-dead")
	r = runBinary(t, env, "outbox", "--retry-dead", "--destination", "crm", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"retried": 1`)
	r = runBinary(t, env, "reconcile", "--json") // delivers what is due before it exits
	require.Equal(t, 0, r.code, r.stderr)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"webhook.test", "bucket.entered"}, kinds)
}
