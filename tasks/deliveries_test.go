package tasks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets/destination"
	"github.com/bucketworker/bucket-worker/db"
)

// Destinations (contract §15): deliveries ride the outbox to a real HTTP
// receiver that checks every signature with a verifier of its own, and
// to PostHog's own client talking to a capture endpoint.

// webhookRequest is one request a receiver took.
type webhookRequest struct {
	id, kind, userID string
	status           int
	body             map[string]any
}

// receiver is a webhook endpoint. It verifies each request's Standard
// Webhooks signature by hand — HMAC-SHA256 of "id.timestamp.body" — and
// answers with respond's status, or hangs past the sender's timeout when
// respond says 0.
type receiver struct {
	t       testing.TB
	key     []byte
	mu      sync.Mutex
	taken   []webhookRequest
	respond func(r webhookRequest, n int) int
	srv     *httptest.Server
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{t: t, key: make([]byte, 32), respond: func(webhookRequest, int) int { return http.StatusOK }}
	_, _ = rand.Read(r.key)
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

// secret is the receiver's key as a destination's variable holds it.
func (r *receiver) secret() string { return "whsec_" + base64.StdEncoding.EncodeToString(r.key) }

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	require.NoError(r.t, err)
	require.NoError(r.t, verifySignature(r.key, req.Header, body, time.Now()), "every request is signed")
	require.Equal(r.t, "application/json", req.Header.Get("content-type"))
	var got webhookRequest
	require.NoError(r.t, json.Unmarshal(body, &got.body))
	got.id, got.kind = req.Header.Get("webhook-id"), got.body["type"].(string)
	require.Equal(r.t, got.id, got.body["id"], "the header's id is the body's")
	if data, ok := got.body["data"].(map[string]any); ok {
		got.userID, _ = data["userId"].(string)
	}
	r.mu.Lock()
	n := len(r.taken)
	got.status = r.respond(got, n)
	r.taken = append(r.taken, got)
	r.mu.Unlock()
	if got.status == 0 {
		// Past every timeout of a sender: until it gives up. Not a fixed
		// 5 s, which a command's inline delivery (CommandPushTimeout) also
		// waits: on a loaded machine the receiver's wait ran out first, and
		// its empty 200 delivered the row.
		select {
		case <-req.Context().Done():
		case <-time.After(2 * WebhookTimeout):
		}
		return
	}
	w.WriteHeader(got.status)
}

// requests returns what the receiver took so far.
func (r *receiver) requests() []webhookRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhookRequest(nil), r.taken...)
}

// verifySignature checks a Standard Webhooks signature: v1, base64 of
// HMAC-SHA256(key, id + "." + timestamp + "." + body), and a timestamp
// within five minutes of now.
func verifySignature(key []byte, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || id == "" {
		return fmt.Errorf("missing webhook-id or webhook-timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %s is off by %s", ts, d)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

// webhook adds the destination of the definition to the env, signing with
// the receiver's secret, and returns its deliverer.
func (e *env) webhook(def string, r *receiver, maxAttempts int) *Deliverer {
	e.t.Helper()
	ws, report := destination.Load(fstest.MapFS{"destinations/d.yaml": {Data: []byte(def + "\nurl: " + r.srv.URL + "\nsecretEnv: SECRET\n")}})
	require.NoError(e.t, report.Err())
	sender, err := NewWebhookSender(ws[0], r.secret())
	require.NoError(e.t, err)
	p := NewDeliverer(ws[0].ID, sender, e.db, slog.New(slog.NewTextHandler(e.t.Output(), nil)), e.clock.Now, maxAttempts)
	e.deps.Destinations.Webhooks = append(e.deps.Destinations.Webhooks, ws[0])
	e.deps.Deliverers = append(e.deps.Deliverers, p)
	return p
}

// deliveries returns the destination's deliveries, oldest first.
func (e *env) deliveries(destinationID string) []db.Delivery {
	e.t.Helper()
	var rows []db.Delivery
	require.NoError(e.t, e.db.NewSelect().Model(&rows).Where("d.destination = ?", destinationID).OrderExpr("d.id").Scan(e.ctx))
	return rows
}

// deliver runs a round of the deliverer as a running worker does, after
// the clock moved past any backoff.
func (e *env) deliver(p *Deliverer, timeout time.Duration) {
	e.t.Helper()
	e.clock.Advance(DeliveryRetryCap)
	_, _ = p.Deliver(e.ctx, timeout)
}

const (
	proJoin  = `{"userId":"u","userEmail":"u@example.com","contactProperties":{"plan":"pro"}}`
	proLeave = `{"userId":"u","contactProperties":{"plan":"free"}}`
)

func TestWebhookDeliversEachTransitionOnceSigned(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/pro.yaml": proBucket})
	r := newReceiver(t)
	e.webhook("id: crm\nevents: [bucket.entered, bucket.left]", r, 15)

	e.ingest("app.active", proJoin)
	e.ingest("contact:updated", proLeave)
	got := r.requests()
	require.Len(t, got, 2, "each transition arrives, delivered after its commit")
	require.Equal(t, "bucket.entered", got[0].kind)
	require.Equal(t, map[string]any{"bucketId": "pro", "bucketName": "Pro", "userId": "u", "userEmail": "u@example.com",
		"transition": "entered", "entryCount": 1.0, "source": "event"}, got[0].body["data"])
	require.Equal(t, "2026-11-29T12:00:00Z", got[0].body["timestamp"], "the transition's time")
	require.Equal(t, "bucket.left", got[1].kind)
	require.Equal(t, "criteria", got[1].body["data"].(map[string]any)["reason"])
	require.True(t, strings.HasPrefix(got[0].id, "msg_"))
	require.NotEqual(t, got[0].id, got[1].id)
	for _, d := range e.deliveries("crm") {
		require.NotNil(t, d.DeliveredAt)
	}
	e.deliver(e.deps.Deliverers[0], time.Second)
	require.Len(t, r.requests(), 2, "nothing is sent twice")
}

// TestWebhookRetriesUntilItArrives: a 500, then a timeout, then a 200 is
// one logical event, with one webhook-id throughout.
func TestWebhookRetriesUntilItArrives(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/pro.yaml": proBucket})
	r := newReceiver(t)
	r.respond = func(_ webhookRequest, n int) int {
		return []int{http.StatusInternalServerError, 0, http.StatusOK}[min(n, 2)]
	}
	p := e.webhook("id: crm\nevents: [bucket.entered]", r, 15)

	e.ingest("app.active", proJoin) // a 500
	d := e.deliveries("crm")[0]
	require.Nil(t, d.DeliveredAt)
	require.Equal(t, 1, d.Attempts)
	require.Contains(t, *d.LastError, "500")
	e.deliver(p, 300*time.Millisecond) // the receiver hangs
	require.Equal(t, 2, e.deliveries("crm")[0].Attempts)
	e.deliver(p, time.Second) // a 200
	got := r.requests()
	require.Len(t, got, 3)
	require.Equal(t, got[0].id, got[1].id)
	require.Equal(t, got[0].id, got[2].id, "every retry carries the same webhook-id")
	require.NotNil(t, e.deliveries("crm")[0].DeliveredAt)
	e.deliver(p, time.Second)
	require.Len(t, r.requests(), 3)
}

// TestWebhookKeepsOrderPerUserAndBucket: a left whose entered still fails
// waits behind it; another user's deliveries do not.
func TestWebhookKeepsOrderPerUserAndBucket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/pro.yaml": proBucket})
	r := newReceiver(t)
	var mu sync.Mutex
	down := true
	r.respond = func(req webhookRequest, _ int) int {
		mu.Lock()
		defer mu.Unlock()
		if down && req.userID == "u" {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	p := e.webhook("id: crm\nevents: [bucket.entered, bucket.left]", r, 15)

	e.ingest("app.active", proJoin)
	e.ingest("contact:updated", proLeave)
	e.deliver(p, time.Second)
	e.ingest("app.active", `{"userId":"v","contactProperties":{"plan":"pro"}}`)
	e.deliver(p, time.Second)
	kinds := map[string]int{}
	for _, req := range r.requests() {
		kinds[req.userID+" "+req.kind]++
	}
	require.Equal(t, map[string]int{"u bucket.entered": 3, "v bucket.entered": 1}, kinds,
		"u's left waits behind its entered; v goes through")

	mu.Lock()
	down = false
	mu.Unlock()
	e.deliver(p, time.Second)
	got := r.requests()
	require.Len(t, got, 6)
	require.Equal(t, "u bucket.entered", got[4].userID+" "+got[4].kind)
	require.Equal(t, "u bucket.left", got[5].userID+" "+got[5].kind, "the left lands after its entered")
}

// TestDeadDeliveryIsKeptAndRetried: a delivery that fails too often is
// dead — kept, no longer tried, holding back the user's later ones —
// until it is queued again.
func TestDeadDeliveryIsKeptAndRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/pro.yaml": proBucket})
	r := newReceiver(t)
	var mu sync.Mutex
	status := http.StatusBadGateway
	r.respond = func(webhookRequest, int) int { mu.Lock(); defer mu.Unlock(); return status }
	p := e.webhook("id: crm\nevents: [bucket.entered, bucket.left]", r, 3)

	e.ingest("app.active", proJoin)
	e.deliver(p, time.Second)
	e.deliver(p, time.Second)
	dead := e.deliveries("crm")[0]
	require.NotNil(t, dead.DeadAt, "dead after its third attempt")
	require.Equal(t, 3, dead.Attempts)
	e.ingest("contact:updated", proLeave)
	e.deliver(p, time.Second)
	require.Len(t, r.requests(), 3, "a dead delivery is not tried, nor is what follows it")
	stats, err := db.DeliveryStatsByDestination(e.ctx, e.db)
	require.NoError(t, err)
	require.Equal(t, 1, stats["crm"].Dead)
	require.Equal(t, 1, stats["crm"].Pending)

	mu.Lock()
	status = http.StatusNoContent
	mu.Unlock()
	n, err := db.RetryDeadDeliveries(e.ctx, e.db, "crm", e.clock.Now())
	require.NoError(t, err)
	require.Equal(t, 1, n)
	e.deliver(p, time.Second)
	got := r.requests()
	require.Len(t, got, 5)
	require.Equal(t, []string{"bucket.entered", "bucket.left"}, []string{got[3].kind, got[4].kind})
}

// TestWebhookFilters: a destination receives only its buckets' and its
// event types' transitions, and dwell fires send nothing anywhere.
func TestWebhookFilters(t *testing.T) {
	t.Parallel()
	trial := "id: trial\nname: Trial\ncriteria: {type: property, property: plan, operator: eq, value: trial}\n"
	e := newEnv(t, defs{"buckets/pro.yaml": proBucket, "buckets/trial.yaml": trial, "journeys/pro-week.json": proWeek})
	e.backfilled("pro")
	r := newReceiver(t)
	e.webhook("id: crm\nevents: [bucket.entered]\nbuckets: [pro]", r, 15)

	e.ingest("app.active", `{"userId":"u","contactProperties":{"plan":"trial"}}`)     // joins trial
	e.ingest("contact:updated", `{"userId":"u","contactProperties":{"plan":"pro"}}`)  // leaves trial, joins pro
	e.ingest("contact:updated", `{"userId":"u","contactProperties":{"plan":"free"}}`) // leaves pro
	got := r.requests()
	require.Len(t, got, 1)
	require.Equal(t, "bucket.entered", got[0].kind)
	require.Equal(t, "pro", got[0].body["data"].(map[string]any)["bucketId"])

	e.proMember("w", 8*day)
	require.Equal(t, 1, e.sweep(ReconcileInput{}).DwellFired)
	require.Len(t, e.deliveries("crm"), 1, "a dwell fire has no delivery")
}

// capture is a PostHog capture endpoint: it records the events of each
// batch it accepts, and refuses the first fail batches.
type capture struct {
	mu       sync.Mutex
	fail     int
	accepted []map[string]any
	refused  []map[string]any
	srv      *httptest.Server
}

func newCapture(t testing.TB, fail int) *capture {
	c := &capture{fail: fail}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		require.Equal(t, "/batch/", req.URL.Path)
		var batch struct {
			APIKey string           `json:"api_key"`
			Batch  []map[string]any `json:"batch"`
		}
		require.NoError(t, json.NewDecoder(req.Body).Decode(&batch))
		require.Equal(t, "phc_test", batch.APIKey)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.fail > 0 {
			c.fail--
			c.refused = append(c.refused, batch.Batch...)
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		c.accepted = append(c.accepted, batch.Batch...)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *capture) events() (accepted, refused []map[string]any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.accepted...), append([]map[string]any(nil), c.refused...)
}

// TestPostHogMirrorsMembership: joins set the person property, leaves
// unset it, in order under a failing first attempt, through PostHog's own
// client; a join the entry limit kept silent still sets it.
func TestPostHogMirrorsMembership(t *testing.T) {
	t.Parallel()
	synced := "id: pro\nname: Pro\nsyncToPostHog: true\nentryLimit: once\n" +
		"criteria: {type: property, property: plan, operator: eq, value: pro}\n"
	e := newEnv(t, defs{"buckets/pro.yaml": synced})
	c := newCapture(t, 1)
	sender, err := NewPostHogSender("phc_test", c.srv.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sender.Close() })
	p := NewDeliverer(destination.PostHog, sender, e.db, slog.New(slog.NewTextHandler(t.Output(), nil)), e.clock.Now, 15)
	e.deps.Destinations.PostHog = true
	e.deps.Deliverers = []*Deliverer{p}

	e.ingest("app.active", proJoin)       // refused by PostHog
	e.ingest("contact:updated", proLeave) // waits behind the join
	e.deliver(p, 5*time.Second)
	accepted, refused := c.events()
	require.Len(t, refused, 1)
	require.Len(t, accepted, 2)
	set, unset := accepted[0], accepted[1]
	require.Equal(t, "$set", set["event"])
	require.Equal(t, "u", set["distinct_id"])
	require.Equal(t, map[string]any{"hogsend_bucket_pro": true}, set["properties"].(map[string]any)["$set"])
	require.Equal(t, refused[0]["uuid"], set["uuid"], "a retry is the same event")
	require.Equal(t, "u", unset["distinct_id"])
	require.Equal(t, []any{"hogsend_bucket_pro"}, unset["properties"].(map[string]any)["$unset"])

	// entryLimit once: the re-join emits no bucket:entered, and the user
	// is in the bucket all the same.
	e.ingest("contact:updated", `{"userId":"u","contactProperties":{"plan":"pro"}}`)
	require.Len(t, e.keys("u"), 2, "no second bucket:entered")
	e.deliver(p, 5*time.Second)
	accepted, _ = c.events()
	require.Len(t, accepted, 3)
	require.Equal(t, map[string]any{"hogsend_bucket_pro": true}, accepted[2]["properties"].(map[string]any)["$set"])
}

// TestUnsentDeliveriesGoBackUntried: a batch whose time runs out while its
// first requests hang counts an attempt for those, and gives the ones it
// never sent back as they were: due, unleased, no attempt, no error.
func TestUnsentDeliveriesGoBackUntried(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/pro.yaml": proBucket})
	r := newReceiver(t)
	r.respond = func(webhookRequest, int) int { return 0 } // hangs past the timeout
	p := e.webhook("id: crm\nevents: [bucket.entered]", r, 15)
	const n = 3 * webhookConcurrency
	for i := range n {
		e.ingest("app.active", fmt.Sprintf(`{"userId":"u%d","contactProperties":{"plan":"pro"}}`, i))
	}
	_, err := p.Deliver(e.ctx, 300*time.Millisecond)
	require.Error(t, err)
	tried, untried := 0, 0
	for _, d := range e.deliveries("crm") {
		switch {
		case d.Attempts == 1:
			tried++
			require.NotNil(t, d.LastError)
		case d.Attempts == 0:
			untried++
			require.Nil(t, d.LastError)
			require.Nil(t, d.LeasedUntil, "given back")
			require.False(t, d.AvailableAt.After(e.clock.Now()), "due at once")
		}
	}
	require.Equal(t, len(r.requests()), tried, "an attempt for each request made")
	require.Equal(t, n, tried+untried)
	require.Positive(t, untried)
}
