package destination

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

func load(t *testing.T, content string) ([]*Webhook, error) {
	t.Helper()
	ws, report := Load(fstest.MapFS{"destinations/crm.yaml": {Data: []byte(content)}})
	return ws, report.Err()
}

func TestLoadAWebhook(t *testing.T) {
	ws, err := load(t, "id: crm\nurl: https://hooks.example.com/in\nevents: [bucket.entered, bucket.left]\nbuckets: [pro]\nsecretEnv: CRM_SECRET\n")
	require.NoError(t, err)
	require.Len(t, ws, 1)
	w := ws[0]
	require.Equal(t, Webhook{ID: "crm", URL: "https://hooks.example.com/in", Events: []string{EventEntered, EventLeft},
		Buckets: []string{"pro"}, SecretEnv: "CRM_SECRET", Enabled: true, File: "destinations/crm.yaml", bucketsPath: "buckets"}, *w)
	require.True(t, w.Wants(EventLeft, "pro"))
	require.False(t, w.Wants(EventLeft, "dormant"), "filtered to pro")

	every, err := load(t, "id: crm\nurl: http://127.0.0.1:9/in\nevents: [bucket.left]\nsecretEnv: S\nenabled: false\n")
	require.NoError(t, err)
	require.True(t, every[0].Wants(EventLeft, "anything"), "no filter: every bucket")
	require.False(t, every[0].Wants(EventEntered, "anything"))
	require.False(t, every[0].Enabled)

	errs := CheckBuckets(ws, func(id string) bool { return id == "dormant" })
	require.EqualError(t, errs, `destinations/crm.yaml: buckets[0]: no bucket has id "pro"`)
}

// TestLoadRejects: every bad field is an error naming the file and the
// field, and a value that looks like a secret is never echoed.
func TestLoadRejects(t *testing.T) {
	const ok = "\nevents: [bucket.left]\nsecretEnv: S\n"
	for _, tc := range []struct{ content, want string }{
		{"id: posthog\nurl: https://h.example.com" + ok, `destinations/crm.yaml: id: "posthog" is the id of PostHog's destination`},
		{"id: Crm!\nurl: https://h.example.com" + ok, `destinations/crm.yaml: id: invalid id "Crm!"`},
		{"id: crm\nurl: https://user:pw@h.example.com" + ok, "destinations/crm.yaml: url: the URL must not hold credentials"},
		{"id: crm\nurl: https://" + ok, "destinations/crm.yaml: url: the URL has no host"},
		{"id: crm\nurl: http://10.0.0.1/x" + ok, "destinations/crm.yaml: url: plain http only to a loopback host"},
		{"id: crm\nurl: https://h.example.com\nevents: []\nsecretEnv: S\n", "destinations/crm.yaml: events: must list at least one event type"},
		{"id: crm\nurl: https://h.example.com\nevents: [bucket.left, bucket.left]\nsecretEnv: S\n", `destinations/crm.yaml: events[1]: repeated event type "bucket.left"`},
		{"id: crm\nurl: https://h.example.com\nevents: [bucket.left]\nbuckets: []\nsecretEnv: S\n", "destinations/crm.yaml: buckets: must list at least one bucket"},
		{"id: crm\nurl: https://h.example.com\nevents: [bucket.left]\nsecretEnv: whsec_abcdef\n", "destinations/crm.yaml: secretEnv: must name an environment variable"},
		{"id: crm\nurl: https://h.example.com\nevents: [bucket.left]\n", "destinations/crm.yaml"},
		{"id: crm\nurl: https://h.example.com" + ok + "secret: x\n", "destinations/crm.yaml"},
	} {
		ws, err := load(t, tc.content)
		require.ErrorContains(t, err, tc.want, tc.content)
		require.NotContains(t, err.Error(), "whsec_abcdef")
		require.Empty(t, ws)
	}
}
