//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
)

// freeAddr is a loopback address with a port nobody listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// scrape reads the worker's /metrics with Prometheus' own text parser.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return families
}

// sample is the value of the family's series with exactly these labels
// (a histogram's count), and whether it exists.
func sample(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsScrape scrapes a running worker's /metrics after an ingest
// that joins, a sweep that leaves, a dead delivery and a late expiry
// timer: every counter and gauge holds the exact value.
func TestMetricsScrape(t *testing.T) {
	conn, dbURL := dbtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A webhook that always fails, dead at its first failure.
	var calls sync.Map
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Store(r.Header.Get("webhook-id"), true)
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
	}))
	defer hook.Close()
	key := make([]byte, 24)
	_, _ = rand.Read(key)
	defsDir := definitions(t, map[string]string{
		"m-pro.yaml":    "id: m-pro\nname: M pro\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n",
		"m-recent.yaml": "id: m-recent\nname: M recent\ncriteria: {type: event, eventName: e2e.r, check: exists, within: 1h}\n",
		"m-window.yaml": "id: m-window\nname: M window\nfastExpiry: true\ncriteria: {type: event, eventName: e2e.m, check: exists, within: 1h}\n",
	})
	require.NoError(t, os.MkdirAll(filepath.Join(defsDir, "destinations"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(defsDir, "destinations", "dead-end.yaml"),
		[]byte("id: dead-end\nurl: "+hook.URL+"\nevents: [bucket.entered]\nbuckets: [m-pro]\nsecretEnv: DEAD_END_SECRET\n"), 0o644))

	addr := freeAddr(t)
	w := startWorker(t, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir, "METRICS_ADDR="+addr,
		"DEAD_END_SECRET=whsec_"+base64.StdEncoding.EncodeToString(key), "DESTINATION_MAX_ATTEMPTS=1")
	// The boot backfills of the two new buckets record their hashes.
	require.Eventually(t, func() bool {
		configs, err := db.BucketConfigs(ctx, conn)
		require.NoError(t, err)
		return configs["m-pro"].CriteriaHash != nil && configs["m-recent"].CriteriaHash != nil && configs["m-window"].CriteriaHash != nil
	}, time.Minute, 200*time.Millisecond, w.Logs())
	families := scrape(t, addr)
	v, ok := sample(families, "bucket_worker_bucket_members", map[string]string{"bucket": "m-pro"})
	require.True(t, ok)
	require.Equal(t, 0.0, v, "counted at boot")

	// A member of m-recent whose event left the window: the sweep's leave.
	// A member of m-window whose timer was due 40 s ago. The lateness is
	// measured at the clock the claiming pass read before it claimed,
	// which can be a little before this test's now: 29.99 s once, for a
	// timer due 30 s before it.
	now := time.Now()
	require.NoError(t, dbtest.InsertUserEvents(ctx, conn, dbtest.Events([]string{"m-gone"}, "e2e.r", now.Add(-2*time.Hour))))
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, dbtest.Members([]string{"m-gone"}, "m-recent", now.Add(-2*time.Hour))))
	require.NoError(t, dbtest.InsertUserEvents(ctx, conn, dbtest.Events([]string{"m-late"}, "e2e.m", now.Add(-time.Hour-40*time.Second))))
	late := dbtest.Members([]string{"m-late"}, "m-window", now.Add(-time.Hour-40*time.Second))
	expires := now.Add(-40 * time.Second)
	late[0].ExpiresAt = &expires
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, late))
	rows, err := db.ListMemberships(ctx, conn, db.MembershipFilter{BucketID: "m-window", UserID: "m-late"})
	require.NoError(t, err)
	require.NoError(t, db.ArmTimers(ctx, conn, []db.ExpiryTimer{{RowID: rows[0].ID, FiresAt: expires, BucketID: "m-window", UserID: "m-late"}}))

	// The late timer fires at once.
	require.Eventually(t, func() bool { return status(t, conn, "m-window", "m-late") == db.StatusLeft }, 30*time.Second, 200*time.Millisecond, w.Logs())

	// An ingest that joins, through Hatchet.
	client, err := hatchet.NewClient()
	require.NoError(t, err)
	require.NoError(t, client.Events().Push(ctx, tasks.ContactUpdated, map[string]any{"userId": "m-new", "contactProperties": map[string]any{"plan": "pro"}}))
	require.Eventually(t, func() bool { return status(t, conn, "m-pro", "m-new") == db.StatusActive }, time.Minute, 200*time.Millisecond, w.Logs())

	// A sweep that leaves.
	result, err := client.Run(ctx, tasks.TaskReconcile, tasks.ReconcileInput{BucketIDs: []string{"m-recent", "m-window"}})
	require.NoError(t, err, w.Logs())
	var out tasks.ReconcileOutput
	require.NoError(t, result.TaskOutput(tasks.TaskReconcile).Into(&out))
	require.Equal(t, 1, out.Reconciled)

	// The join's delivery fails once and is dead.
	require.Eventually(t, func() bool {
		n := 0
		calls.Range(func(any, any) bool { n++; return true })
		v, _ := sample(scrape(t, addr), "bucket_worker_deliveries_dead", map[string]string{"destination": "dead-end"})
		return n == 1 && v == 1
	}, 30*time.Second, 200*time.Millisecond, w.Logs())

	families = scrape(t, addr)
	for _, want := range []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"bucket_worker_transitions_total", map[string]string{"bucket": "m-pro", "transition": "entered", "source": "event"}, 1},
		{"bucket_worker_transitions_total", map[string]string{"bucket": "m-pro", "transition": "left", "source": "reconcile"}, 0},
		{"bucket_worker_transitions_total", map[string]string{"bucket": "m-recent", "transition": "left", "source": "reconcile"}, 1},
		{"bucket_worker_transitions_total", map[string]string{"bucket": "m-window", "transition": "left", "source": "reconcile"}, 1},
		{"bucket_worker_bucket_members", map[string]string{"bucket": "m-pro"}, 1},    // the boot's count, and the join
		{"bucket_worker_bucket_members", map[string]string{"bucket": "m-recent"}, 0}, // the sweep's count
		{"bucket_worker_bucket_members", map[string]string{"bucket": "m-window"}, 0}, // the sweep's count, after the timer's leave
		{"bucket_worker_sweep_duration_seconds", map[string]string{"bucket": "m-window"}, 1},
		{"bucket_worker_events_ingested_total", map[string]string{"result": "stored"}, 1},
		{"bucket_worker_ingest_round_events", map[string]string{}, 1},
		// The ingest's bucket:entered comes back to the worker's
		// bucket-ingest subscription only if it listens to bucket:*; it
		// does not, so nothing else is counted.
		{"bucket_worker_events_ingested_total", map[string]string{"result": "duplicate"}, 0},
		{"bucket_worker_events_ingested_total", map[string]string{"result": "invalid"}, 0},
		{"bucket_worker_sweep_duration_seconds", map[string]string{"bucket": "m-recent"}, 1},
		{"bucket_worker_sweep_duration_seconds", map[string]string{"bucket": "m-pro"}, 0},
		{"bucket_worker_expiry_timer_lateness_seconds", map[string]string{}, 1},
		{"bucket_worker_deliveries_dead", map[string]string{"destination": "dead-end"}, 1},
		{"bucket_worker_outbox_pending", map[string]string{"destination": "dead-end"}, 0},
		{"bucket_worker_expiry_timers_armed", map[string]string{}, 0},
	} {
		got, ok := sample(families, want.name, want.labels)
		require.True(t, ok, "%s%v is scraped", want.name, want.labels)
		require.Equal(t, want.value, got, "%s%v", want.name, want.labels)
	}
	// The late timer is past the histogram's bucket of 30 s.
	lateness := families["bucket_worker_expiry_timer_lateness_seconds"].GetMetric()[0].GetHistogram()
	require.GreaterOrEqual(t, lateness.GetSampleSum(), 30.0)
	require.Less(t, lateness.GetSampleSum(), 90.0)
	for _, f := range families {
		require.NotEmpty(t, f.GetHelp(), "%s has a help text", f.GetName())
	}
	_, ok = families["go_goroutines"]
	require.True(t, ok, "Go runtime metrics")
	checkMonitoringFiles(t, families)
}

// checkMonitoringFiles parses the alerting rules and the Grafana dashboard
// under docs/monitoring and checks that every metric their expressions read
// is one the worker served: a renamed metric breaks this test, not an
// operator's pager.
func checkMonitoringFiles(t *testing.T, served map[string]*dto.MetricFamily) {
	exists := func(name string) bool {
		if name == "up" { // Prometheus' own, per scrape target
			return true
		}
		for _, suffix := range []string{"", "_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok {
				if _, ok := served[base]; ok {
					return true
				}
			}
		}
		return false
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	raw, err := os.ReadFile("../docs/monitoring/alerts.yml")
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(raw, &rules))
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Expr, r.Alert)
			exprs = append(exprs, r.Expr)
		}
	}
	require.NotEmpty(t, exprs)
	var dashboard struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	raw, err = os.ReadFile("../docs/monitoring/grafana-dashboard.json")
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &dashboard))
	for _, p := range dashboard.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
		}
	}
	for _, v := range dashboard.Templating.List {
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	for _, expr := range exprs {
		names := metricNames(expr)
		require.NotEmpty(t, names, "%q reads a metric", expr)
		for _, name := range names {
			require.True(t, exists(name), "%q reads %s, which the worker does not serve", expr, name)
		}
	}
}

// promqlWords are the words of PromQL that are not metric names: its
// keywords and its aggregation operators, which may come before a
// grouping ("sum by (bucket) (…)").
var promqlWords = map[string]bool{"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true,
	"ignoring": true, "group_left": true, "group_right": true, "bool": true, "offset": true, "inf": true, "nan": true,
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "group": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true}

// metricNames are the metric names a PromQL expression (or a Grafana
// label_values query) reads: the identifiers outside label matchers,
// grouping lists and strings that are not functions or keywords.
func metricNames(expr string) []string {
	var names []string
	depthBrace, grouping := 0, false
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'':
			j := strings.IndexByte(expr[i+1:], c)
			if j < 0 {
				return names
			}
			i += j + 2
			continue
		case c == '{':
			depthBrace++
		case c == '}':
			depthBrace--
		case c == ')' && grouping:
			grouping = false
		case c == '[': // a range: [5m]
			i += strings.IndexByte(expr[i:], ']') + 1
			continue
		case c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(expr) && (expr[j] == '_' || expr[j] == ':' || expr[j] >= 'a' && expr[j] <= 'z' || expr[j] >= 'A' && expr[j] <= 'Z' || expr[j] >= '0' && expr[j] <= '9') {
				j++
			}
			word := expr[i:j]
			rest := strings.TrimLeft(expr[j:], " ")
			switch {
			case depthBrace > 0 || grouping:
			case word == "by" || word == "without" || word == "on" || word == "ignoring" || word == "group_left" || word == "group_right":
				grouping = strings.HasPrefix(rest, "(")
			case promqlWords[strings.ToLower(word)], strings.HasPrefix(rest, "("):
				// a keyword or a function
			case i > 0 && expr[i-1] == '$': // a dashboard variable
			case strings.HasPrefix(rest, ")") && strings.HasPrefix(strings.TrimSpace(expr[:i]), "label_values(") && strings.Contains(expr[:i], ","):
				// label_values(metric, label): the label
			default:
				names = append(names, word)
			}
			i = j
			continue
		case c >= '0' && c <= '9':
			for i < len(expr) && (expr[i] >= '0' && expr[i] <= '9' || expr[i] == '.' || strings.IndexByte("smhdwy", expr[i]) >= 0) {
				i++
			}
			continue
		}
		i++
	}
	return names
}

// tcpProxy forwards a loopback port to target until cut: then it refuses
// new connections and drops the open ones, as a stopped server would,
// until restored.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	open   map[net.Conn]bool
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{ln: ln, target: target, open: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *tcpProxy) addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.open[c], p.open[up] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
		go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
	}
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.open {
		_ = c.Close()
	}
	clear(p.open)
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// readyz is the status of the worker's /readyz and its body.
func readyz(t testing.TB, addr string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// TestReadyz: /readyz answers 503 with the reason while the worker's
// Postgres is stopped, and while its Hatchet is gone, and 200 again after
// each; /healthz answers throughout.
func TestReadyz(t *testing.T) {
	_, dbURL := dbtest.New(t)
	u, err := dbURLHost(dbURL)
	require.NoError(t, err)
	pg := newTCPProxy(t, u)
	api := newTCPProxy(t, strings.TrimPrefix(os.Getenv("HATCHET_API_URL"), "http://"))
	defsDir := definitions(t, map[string]string{"active-pro.yaml": activeProBucket})

	// An address that is taken stops the worker at boot, naming the variable.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	cmd := exec.Command(workerBinary(t), "run")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+defsDir, "METRICS_ADDR="+taken.Addr().String())
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s", out)
	require.Contains(t, string(out), "METRICS_ADDR: listening on "+taken.Addr().String())

	addr := freeAddr(t)
	w := startWorker(t, "DATABASE_URL="+strings.Replace(dbURL, u, pg.addr(), 1), "HATCHET_CLIENT_SERVER_URL=http://"+api.addr(),
		"DEFINITIONS_DIR="+defsDir, "METRICS_ADDR="+addr)
	status := func(want int, contains string) func() bool {
		return func() bool {
			code, body := readyz(t, addr)
			return code == want && strings.Contains(body, contains)
		}
	}
	require.Eventually(t, status(http.StatusOK, "ready"), 10*time.Second, 100*time.Millisecond, w.Logs())

	pg.cut()
	require.Eventually(t, status(http.StatusServiceUnavailable, "postgres:"), 10*time.Second, 100*time.Millisecond, w.Logs())
	resp, err := http.Get("http://" + addr + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the process still serves")
	pg.restore()
	require.Eventually(t, status(http.StatusOK, "ready"), 20*time.Second, 100*time.Millisecond, w.Logs())

	api.cut()
	require.Eventually(t, status(http.StatusServiceUnavailable, "hatchet:"), 20*time.Second, 100*time.Millisecond, w.Logs())
	api.restore()
	require.Eventually(t, status(http.StatusOK, "ready"), time.Minute, 200*time.Millisecond, w.Logs())
}

// dbURLHost is the host:port of a postgres:// URL.
func dbURLHost(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("no host in the database URL")
	}
	return u.Host, nil
}

// TestMetricNames: the names the monitoring check reads out of PromQL.
func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`up{job="bucket-worker"} == 0`: {"up"},
		`sum by (bucket) (increase(bucket_worker_transitions_total{transition="left"}[1d])) == 0 and on (bucket) max by (bucket) (bucket_worker_bucket_members) > 0`: {
			"bucket_worker_transitions_total", "bucket_worker_bucket_members"},
		`histogram_quantile(0.95, sum by (bucket, le) (rate(bucket_worker_sweep_duration_seconds_bucket{bucket=~"$bucket"}[1h])))`: {
			"bucket_worker_sweep_duration_seconds_bucket"},
		`label_values(bucket_worker_bucket_members, bucket)`: {"bucket_worker_bucket_members"},
		`sum(rate(bucket_worker_event_ingested_total{result="invalid"}[15m])) > 0.1 * sum(rate(bucket_worker_events_ingested_total[15m]))`: {
			"bucket_worker_event_ingested_total", "bucket_worker_events_ingested_total"},
	} {
		require.Equal(t, want, metricNames(expr), expr)
	}
}
