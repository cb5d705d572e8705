//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v0 "github.com/hatchet-dev/hatchet/pkg/client"
	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/journeys"
	"github.com/bucketworker/bucket-worker/tasks"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// BenchmarkIngest measures bucket-ingest end to end — from the push to the
// committed join — next to two baselines triggered by the same pushes on
// the same Hatchet server: a no-op task, and a no-op task that pushes one
// event per run, as every ingest that makes a user join pushes its
// bucket:entered (the floor of this design on Hatchet). It reports events
// per second for all three, both ratios, and the p50/p99 latency from
// push to committed join. Every event makes a new user join.
//
// The baselines run before the ingest and again after it, in mirrored
// order (no-op, floor, ingest, floor, no-op), and each baseline's rate is
// that of its two legs together: Hatchet's pace drifts over a benchmark
// (on 2026-12-05 both baselines were 10–28% faster after the ingest than
// before it), and a baseline measured only on one side of the ingest
// would carry the drift into the ratio. It also reports the CPU time the
// whole machine took per event, for the ingest (cpu-ms) and the floor
// (floor-cpu-ms), and logs it by kind of process (cpuLegs): on a machine
// whose cores every leg keeps busy, that is where each one's time went.
// Run it with
//
//	BUCKET_BENCH=1 go test -tags e2e ./e2e -run '^$' -bench Ingest -benchtime 1x -timeout 30m
//
// BUCKET_BENCH_EVENTS sets the number of events (2 000 by default).
func BenchmarkIngest(b *testing.B) {
	conn, dbURL, client := benchSetup(b, "ingest")
	n := envInt("BUCKET_BENCH_EVENTS", 2000)
	ctx := context.Background()
	pushAll := func(key, prefix string) []time.Time {
		pushed, err := pushSingles(client, key, prefix, n)
		if err != nil {
			b.Fatal(err)
		}
		return pushed
	}
	for range b.N {
		run := strconv.FormatInt(time.Now().UnixNano(), 36)
		cpu := newCPULegs(newCPUTaker(workerBinary(b), dbURL))
		legOf := func(task baseline, side, leg string) float64 {
			rate := task.rate(b, client, n, func() []time.Time {
				cpu.begin(side)
				return pushAll(task.key, side+"-"+leg+run+"-")
			})
			cpu.end(n)
			return rate
		}
		noopBefore := legOf(noopTask, "no-op", "a")
		floorBefore := legOf(floorTask, "floor", "a")

		// The worker ingesting a bucket that every such event joins.
		env := []string{"DATABASE_URL=" + dbURL, "DEFINITIONS_DIR=" + benchIngestDefinitions(b)}
		profiles := os.Getenv("BUCKET_BENCH_PROFILES")
		if profiles != "" {
			env = append(env, "PPROF_ADDR="+profileAddr)
		}
		w := startWorker(b, env...)
		time.Sleep(2 * time.Second)
		prefix := "ing-" + run + "-"
		var profiled sync.WaitGroup
		if profiles != "" {
			profiled.Go(func() { saveProfile(b, profiles, "ingest-cpu.pprof", "profile?seconds=15") })
		}
		cpu.begin("ingest")
		pushed := pushAll("bench.ingest", prefix)
		ingestEnd := waitFor(b, "ingest", n, func() int { return joined(ctx, conn, prefix) })
		cpu.end(n)
		if profiles != "" {
			profiled.Wait()
			saveProfile(b, profiles, "ingest-block.pprof", "block")
			saveProfile(b, profiles, "ingest-mutex.pprof", "mutex")
		}
		ingestRate := float64(n) / ingestEnd.Sub(pushed[0]).Seconds()
		storedOnce(b, ctx, conn, prefix, n)
		lat := latencies(b, ctx, conn, prefix, pushed)
		_ = w.cmd.Process.Kill()
		floorAfter := legOf(floorTask, "floor", "b")
		noopAfter := legOf(noopTask, "no-op", "b")
		b.Logf("no-op %.1f then %.1f events/s; floor %.1f then %.1f; ingest %.1f between\n%s",
			noopBefore, noopAfter, floorBefore, floorAfter, ingestRate, cpu)

		benchreport.Report(b, "events/s", ingestRate, bothLegs(noopBefore, noopAfter))
		benchreport.ReportFloor(b, "events/s", ingestRate, bothLegs(floorBefore, floorAfter))
		reportLatencies(b, lat)
		ingestCPU, _ := cpu.perEvent("ingest")
		floorCPU, _ := cpu.perEvent("floor")
		b.ReportMetric(ingestCPU, "cpu-ms")
		b.ReportMetric(floorCPU, "floor-cpu-ms")
	}
}

// sustainSeconds is how long BenchmarkIngestAtHalfRate offers the no-op
// task single pushes at its burst rate to find the rate it keeps.
const sustainSeconds = 20

// BenchmarkIngestAtHalfRate offers single pushes, each of which makes a
// user join, at half the rate a no-op task keeps on the same Hatchet when
// it is offered single pushes one by one, for BUCKET_BENCH_OFFERED_SECONDS
// (30 by default), and reports the rate kept against the rate offered and
// the p50/p99 from push to committed join. The no-op's rate is measured
// first: the rate it drains a burst of BUCKET_BENCH_EVENTS pushes at
// (noop-burst-events/s), then the rate it keeps when offered single pushes
// at that rate for sustainSeconds (noop-sustained-events/s). Hatchet
// drains a burst faster than it keeps up with the same pushes sent one at
// a time (120 against 74 events/s on 2026-12-06), and at half of the burst
// rate the no-op's own p99 was 16 s (docs/performance.md, *The rate a
// no-op keeps*).
//
// Two baselines are offered the same rate for as long, each before the
// worker and again after it, and their latencies from push to the start of
// the run are reported for both legs together: the no-op task's
// (noop-p50-ms, noop-p99-ms), what this Hatchet gives a task that does
// nothing, and the floor's (floor-p50-ms, floor-p99-ms), a no-op task
// whose every run has one event pushed after it, in bulk with the others
// pending, as the outbox dispatcher pushes a join's bucket:entered. (The
// floor of BenchmarkIngest, which pushes from inside each run, one event a
// push, fell behind at this rate on 2026-12-06, p99 10–17 s, and left
// Hatchet backed up for the legs after it.)
//
// The floor is offered the same rate twice more, before the worker and
// after it, while the worker's database work for as many events runs
// beside it in this process, on a database of its own (ingestBeside):
// beside-p50-ms and beside-p99-ms are what this machine gives the floor
// when it also carries the worker's SQL.
//
// Each leg's CPU time per event is logged by kind of process (cpuLegs),
// and reported for the worker's leg (cpu-ms) and the floor's
// (floor-cpu-ms), with the worker's events per gathered round
// (round-events, from its metrics). At a rate the machine keeps, Hatchet's
// loops take most of two cores whatever the rate, so these say where the
// time went, not how much more the machine could take. Run it with
//
//	BUCKET_BENCH=1 go test -tags e2e ./e2e -run '^$' -bench IngestAtHalfRate -benchtime 1x -timeout 30m
func BenchmarkIngestAtHalfRate(b *testing.B) {
	conn, dbURL, client := benchSetup(b, "ingest at half rate")
	n := envInt("BUCKET_BENCH_EVENTS", 2000)
	seconds := envInt("BUCKET_BENCH_OFFERED_SECONDS", 30)
	ctx := context.Background()
	for range b.N {
		run := strconv.FormatInt(time.Now().UnixNano(), 36)
		burst := noopTask.rate(b, client, n, func() []time.Time {
			pushed, err := pushSingles(client, noopTask.key, "noop-"+run+"-", n)
			if err != nil {
				b.Fatal(err)
			}
			return pushed
		})
		steady := int(burst * sustainSeconds)
		sustained := noopTask.rate(b, client, steady, func() []time.Time {
			return offer(b, client, noopTask.key, "noop-s"+run+"-", burst, steady)
		})
		offered := sustained / 2
		total := int(offered * float64(seconds))
		sql := newIngestBeside(b)
		cpu := newCPULegs(newCPUTaker(workerBinary(b), dbURL))
		legOf := func(task baseline, side, leg string, beside *ingestBeside) []time.Duration {
			cpu.begin(side)
			defer cpu.end(total)
			return task.latenciesAt(b, client, side+"-"+leg+run+"-", offered, total, beside)
		}
		noopLat := legOf(noopTask, "noop", "a", nil)
		floorLat := legOf(outboxFloorTask, "floor", "a", nil)
		besideLat := legOf(outboxFloorTask, "beside", "a", sql)

		addr := freeAddr(b)
		w := startWorker(b, "DATABASE_URL="+dbURL, "DEFINITIONS_DIR="+benchIngestDefinitions(b), "METRICS_ADDR="+addr)
		time.Sleep(2 * time.Second)
		prefix := "half-" + run + "-"
		cpu.begin("ingest")
		pushed := offer(b, client, "bench.ingest", prefix, offered, total)
		if b.Failed() {
			return
		}
		end := waitFor(b, "ingest at half rate", total, func() int { return joined(ctx, conn, prefix) })
		cpu.end(total)
		storedOnce(b, ctx, conn, prefix, total)
		rounds := scrape(b, addr)["bucket_worker_ingest_round_events"].GetMetric()[0].GetHistogram()
		_ = w.cmd.Process.Kill()
		lat := latencies(b, ctx, conn, prefix, pushed)

		besideLat = append(besideLat, legOf(outboxFloorTask, "beside", "b", sql)...)
		floorLat = append(floorLat, legOf(outboxFloorTask, "floor", "b", nil)...)
		noopLat = append(noopLat, legOf(noopTask, "noop", "b", nil)...)
		b.Logf("no-op: %.1f events/s from a burst, %.1f offered one by one at that rate; offered %.1f; the worker's %d events in %d rounds\n%s",
			burst, sustained, offered, total, rounds.GetSampleCount(), cpu)
		benchreport.Report(b, "events/s", float64(total)/end.Sub(pushed[0]).Seconds(), offered)
		reportLatencies(b, lat)
		reportLatenciesAs(b, "noop-", noopLat)
		reportLatenciesAs(b, "floor-", floorLat)
		reportLatenciesAs(b, "beside-", besideLat)
		ingestCPU, _ := cpu.perEvent("ingest")
		floorCPU, _ := cpu.perEvent("floor")
		b.ReportMetric(ingestCPU, "cpu-ms")
		b.ReportMetric(floorCPU, "floor-cpu-ms")
		b.ReportMetric(burst, "noop-burst-events/s")
		b.ReportMetric(sustained, "noop-sustained-events/s")
		b.ReportMetric(rounds.GetSampleSum()/float64(max(rounds.GetSampleCount(), 1)), "round-events")
	}
}

// ingestBeside is the worker's database work without its Hatchet: the
// ingest of the half-rate benchmark's events, run in this process against
// a database of its own, with the worker's background loops (the outbox
// dispatcher, whose pushes go nowhere, and the expiry timers).
type ingestBeside struct{ deps *tasks.Deps }

// newIngestBeside builds the engine of the benchmark's bucket on a
// database of its own; its loops stop when the benchmark ends.
func newIngestBeside(b *testing.B) *ingestBeside {
	b.Helper()
	conn, _ := dbtest.New(b)
	db.SetMaxConns(conn, envInt("DATABASE_MAX_CONNS", 20)) // the worker's pool, as scripts/bench sizes it
	loaded, report := buckets.Load(os.DirFS(benchIngestDefinitions(b)))
	if err := report.Err(); err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	schema, err := db.ReadSchema(ctx, conn)
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	d := &tasks.Deps{DB: conn, Schema: schema, Buckets: buckets.NewRegistry(loaded), Journeys: journeys.NewRegistry(nil),
		Logger: logger, Now: time.Now, Switch: tasks.NewRuntimeSwitch(conn, 5*time.Second), Hatchet: pushesNowhere{}}
	d.Dispatcher = tasks.NewDispatcher(conn, d.Hatchet, logger, d.Now)
	var loops sync.WaitGroup
	loops.Go(func() { d.Dispatcher.Run(ctx, time.Second) })
	loops.Go(func() { tasks.RunTimers(ctx, d, tasks.ExpiryInterval) })
	b.Cleanup(func() { stop(); loops.Wait() })
	return &ingestBeside{d}
}

// ingest ingests total bench.ingest events, one for each user prefix<i>,
// at the offered rate (see atRate), as the worker's runs would; it returns
// when all are ingested.
func (s *ingestBeside) ingest(b *testing.B, prefix string, offered float64, total int) {
	atRate(offered, total, func(i int) {
		payload := fmt.Sprintf(`{"userId":"%s%d"}`, prefix, i)
		if _, err := tasks.HandleIngest(context.Background(), s.deps, tasks.IngestStore, "bench.ingest", []byte(payload), prefix+strconv.Itoa(i)); err != nil {
			b.Error(err)
		}
	})
}

// pushesNowhere is a Hatchet that takes every push and sends nothing.
type pushesNowhere struct{}

func (pushesNowhere) Push(context.Context, []db.OutboxEvent) error { return nil }
func (pushesNowhere) CancelRuns(context.Context, []string) error   { return nil }

// offer pushes total single events of the key, one for each user
// prefix<i>, each in a push of its own at the offered rate (events per
// second), and returns when each was pushed, by index. A failed push fails
// the benchmark.
func offer(b *testing.B, client *hatchet.Client, key, prefix string, offered float64, total int) []time.Time {
	b.Helper()
	pushed := make([]time.Time, total)
	atRate(offered, total, func(i int) {
		pushed[i] = time.Now()
		if err := client.Events().Push(context.Background(), key, map[string]any{"userId": fmt.Sprintf("%s%d", prefix, i)}); err != nil {
			b.Error(err)
		}
	})
	return pushed
}

// atRate calls each for 0 to total-1, at the offered rate (calls per
// second), each call in a goroutine of its own, and returns when all have
// returned.
func atRate(offered float64, total int, each func(i int)) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / offered))
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := range total {
		wg.Go(func() { each(i) })
		<-tick.C
	}
	wg.Wait()
}

// benchSetup is what the end-to-end benchmarks start from: skipped unless
// BUCKET_BENCH is set, a database of their own and a Hatchet client.
func benchSetup(b *testing.B, what string) (*bun.DB, string, *hatchet.Client) {
	b.Helper()
	if os.Getenv("BUCKET_BENCH") == "" {
		b.Skipf("set BUCKET_BENCH=1 to run the %s benchmark", what)
	}
	conn, dbURL := dbtest.New(b)
	client, err := hatchet.NewClient()
	if err != nil {
		b.Fatal(err)
	}
	warmHatchet(b, client)
	return conn, dbURL, client
}

// warmEvents is how many events warmHatchet runs through Hatchet.
const warmEvents = 1000

var warmed sync.Once

// warmHatchet brings the tests' Hatchet, started afresh on an empty
// database, to where a running one is before a benchmark measures it:
// warmEvents runs of the floor's task (each pushing its event), then
// ANALYZE of Hatchet's database. PostgreSQL has no statistics of a new
// table until autovacuum first visits it after it fills; until then
// Hatchet's statements ran on plans made for empty tables, at 1.7 times
// the database time per event (docs/performance.md, *Hatchet's database
// in a benchmark*), and whichever legs of a benchmark ran first paid for
// it.
func warmHatchet(b *testing.B, client *hatchet.Client) {
	b.Helper()
	warmed.Do(func() {
		floorTask.rate(b, client, warmEvents, func() []time.Time {
			pushed, err := pushSingles(client, floorTask.key, "warm-", warmEvents)
			if err != nil {
				b.Fatal(err)
			}
			return pushed
		})
		if err := stack("analyze"); err != nil {
			b.Fatalf("analyzing Hatchet's database: %v", err)
		}
	})
}

// benchIngestDefinitions is a definitions folder with the bucket every
// bench.ingest event joins.
func benchIngestDefinitions(b *testing.B) string {
	return definitions(b, map[string]string{"bench-ingest.yaml": "id: bench-ingest\nname: Bench ingest\n" +
		"criteria: {type: event, eventName: bench.ingest, check: exists, within: 1h}\n"})
}

// singlesPerPush is how many single events one bulk push of the ingest
// benchmarks carries. Hatchet creates each event's run inside the push,
// and a push it takes longer than 30 s over is sent again by the SDK and
// taken again: Hatchet keeps no idempotency for events. On the loaded
// Hatchet of a full scripts/bench run a push of 1 000 took 20–34 s, and
// 2 000 pushed events were stored 7 000 times.
const singlesPerPush = 100

// pushSingles pushes n events of the key, one for each user prefix<i>, in
// bulk pushes of singlesPerPush, and returns when each was pushed, by
// index.
func pushSingles(client *hatchet.Client, key, prefix string, n int) ([]time.Time, error) {
	at := make([]time.Time, n)
	for start := 0; start < n; start += singlesPerPush {
		end := min(start+singlesPerPush, n)
		batch := make([]v0.EventWithAdditionalMetadata, 0, end-start)
		for i := start; i < end; i++ {
			batch = append(batch, v0.EventWithAdditionalMetadata{Key: key,
				Event: map[string]any{"userId": fmt.Sprintf("%s%d", prefix, i)}})
		}
		sent := time.Now()
		if err := client.Events().BulkPush(context.Background(), batch); err != nil {
			return nil, fmt.Errorf("pushing events %d to %d: %w", start, end, err)
		}
		for i := start; i < end; i++ {
			at[i] = sent
		}
	}
	return at, nil
}

// storedOnce fails the benchmark unless the worker stored exactly n
// bench.ingest events of the prefix: an event Hatchet took twice (a push
// sent again, see singlesPerPush) is work the rate does not count.
func storedOnce(b *testing.B, ctx context.Context, conn *bun.DB, prefix string, n int) {
	b.Helper()
	var stored int
	if err := conn.NewRaw("SELECT count(*) FROM user_events WHERE event = 'bench.ingest' AND user_id LIKE ?", prefix+"%").Scan(ctx, &stored); err != nil {
		b.Fatal(err)
	}
	if stored != n {
		b.Fatalf("the worker stored %d events for the %d pushed: Hatchet took some twice, and the rate is not that of %d", stored, n, n)
	}
}

// runsByUser counts the distinct users of the runs of a baseline task, and
// when each user's first run started: an event Hatchet took twice runs
// twice, and must not make the baseline faster.
type runsByUser struct {
	started sync.Map // user id → time.Time
	n       atomic.Int64
}

// ran records a run, started at the time given, for the user of the input.
func (u *runsByUser) ran(in map[string]any, started time.Time) {
	if _, again := u.started.LoadOrStore(in["userId"], started); !again {
		u.n.Add(1)
	}
}

func (u *runsByUser) count() int { return int(u.n.Load()) }

// startedAt is when the first run for the user started.
func (u *runsByUser) startedAt(user string) time.Time {
	at, _ := u.started.Load(user)
	return at.(time.Time)
}

// A baseline is a task that stands beside the worker's on the same
// Hatchet server, triggered by one event per run, in a worker of its own.
type baseline struct {
	name, key, what string
	// pushes, when set, is the key of one event pushed for each run, as an
	// ingest that joins pushes its bucket:entered: by the run itself, after
	// its work.
	pushes string
	// afterRun pushes the run's event after the run instead, from one
	// pusher that sends everything handed to it since its last push in one
	// bulk push, one push at a time, as the outbox dispatcher sends what
	// the commits since its last push wrote.
	afterRun bool
}

var (
	// noopTask is the baseline of the ingest benchmarks: a task that does
	// nothing.
	noopTask = baseline{name: "bench-noop", key: "bench.noop", what: "no-op task"}
	// floorTask is their second baseline, the floor of this design on
	// Hatchet: a task that does nothing but push one event per run.
	floorTask = baseline{name: "bench-noop-push", key: "bench.noop-push", what: "no-op task that pushes",
		pushes: "bench.noop-pushed"}
	// outboxFloorTask is floorTask with its pushes sent after the run, as
	// the outbox sends them.
	outboxFloorTask = baseline{name: "bench-noop-outbox", key: "bench.noop-outbox", what: "no-op task with an outbox",
		pushes: "bench.noop-pushed", afterRun: true}
)

// start starts a worker of the task and returns its runs and how to stop
// it. A run counts once it pushed its event, or handed it to the pusher.
func (t baseline) start(b *testing.B, client *hatchet.Client) (*runsByUser, func()) {
	b.Helper()
	runs := new(runsByUser)
	var outbox chan any // the user ids of the runs whose events are pending
	if t.afterRun {
		outbox = make(chan any, 100_000)
	}
	task := client.NewStandaloneTask(t.name, func(ctx hatchet.Context, in map[string]any) (any, error) {
		started := time.Now()
		var err error
		switch {
		case t.afterRun:
			outbox <- in["userId"]
		case t.pushes != "":
			err = client.Events().Push(ctx, t.pushes, map[string]any{"userId": in["userId"]})
		}
		runs.ran(in, started)
		return nil, err
	}, hatchet.WithWorkflowEvents(t.key))
	w, err := client.NewWorker(t.name+"-worker", hatchet.WithWorkflows(task), hatchet.WithLogger(sdkLogger))
	if err != nil {
		b.Fatal(err)
	}
	stopWorker, err := w.Start()
	if err != nil {
		b.Fatal(err)
	}
	stopPusher := func() {}
	if t.afterRun {
		done, finished := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(finished)
			pushAfterRuns(b, client, t.pushes, outbox, done)
		}()
		stopPusher = func() { close(done); <-finished }
	}
	time.Sleep(2 * time.Second)
	return runs, func() {
		_ = stopWorker()
		stopPusher()
	}
}

// pushAfterRuns pushes an event of the key for each user id handed to it
// on outbox, until done is closed: at each turn, everything handed to it
// since the last turn (at most singlesPerPush) in one bulk push.
func pushAfterRuns(b *testing.B, client *hatchet.Client, key string, outbox <-chan any, done <-chan struct{}) {
	for {
		var batch []v0.EventWithAdditionalMetadata
		select {
		case <-done:
			return
		case user := <-outbox:
			batch = append(batch, v0.EventWithAdditionalMetadata{Key: key, Event: map[string]any{"userId": user}})
		}
	more:
		for len(batch) < singlesPerPush {
			select {
			case user := <-outbox:
				batch = append(batch, v0.EventWithAdditionalMetadata{Key: key, Event: map[string]any{"userId": user}})
			default:
				break more
			}
		}
		if err := client.Events().BulkPush(context.Background(), batch); err != nil {
			b.Error(err)
		}
	}
}

// rate is the events per second of the task, from the first push to the
// n-th run. push pushes the n events of the task's key and returns when
// each was pushed.
func (t baseline) rate(b *testing.B, client *hatchet.Client, n int, push func() []time.Time) float64 {
	b.Helper()
	runs, stop := t.start(b, client)
	defer stop()
	pushed := push()
	end := waitFor(b, t.what, n, runs.count)
	return float64(n) / end.Sub(pushed[0]).Seconds()
}

// latenciesAt offers total events to the task at the offered rate (see
// offer) and returns each one's time from push to the start of its run.
// beside, when not nil, ingests as many events at the same rate meanwhile.
func (t baseline) latenciesAt(b *testing.B, client *hatchet.Client, prefix string, offered float64, total int, beside *ingestBeside) []time.Duration {
	b.Helper()
	runs, stop := t.start(b, client)
	defer stop()
	var ingested sync.WaitGroup
	if beside != nil {
		ingested.Go(func() { beside.ingest(b, prefix, offered, total) })
	}
	pushed := offer(b, client, t.key, prefix, offered, total)
	waitFor(b, t.what+" at an offered rate", total, runs.count)
	ingested.Wait()
	out := make([]time.Duration, total)
	for i := range total {
		out[i] = runs.startedAt(fmt.Sprintf("%s%d", prefix, i)).Sub(pushed[i])
	}
	return out
}

// bothLegs is the rate of two legs of the same number of events, taken at
// rates r1 and r2: all their events over all their time.
func bothLegs(r1, r2 float64) float64 {
	return 2 / (1/r1 + 1/r2)
}

// profileAddr is where a profiled benchmark's worker serves its profiles.
const profileAddr = "127.0.0.1:6061"

// saveProfile fetches a profile of the worker into dir.
func saveProfile(b *testing.B, dir, name, path string) {
	b.Helper()
	resp, err := http.Get("http://" + profileAddr + "/debug/pprof/" + path)
	if err != nil {
		b.Errorf("fetching the %s profile: %v", path, err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), data, 0o644)
	}
	if err != nil {
		b.Errorf("saving the %s profile: %v", path, err)
	}
}

// waitPoll is how often waitFor asks. A count of the worker's rows scans
// them, in the database being measured: asked every 20 ms, one batched
// run counted 152 times, 9.9 s in all; every 100 ms, 80 times and 7.2 s.
// A side is found done at most 100 ms late, the baselines, polled the same
// way, as much.
const waitPoll = 100 * time.Millisecond

// waitFor polls done until it reaches n and returns when it did.
func waitFor(b *testing.B, what string, n int, done func() int) time.Time {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for done() < n {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d after 10 minutes", what, done(), n)
		}
		time.Sleep(waitPoll)
	}
	return time.Now()
}

// reportLatencies reports the p50 and p99 of the latencies.
func reportLatencies(b *testing.B, latencies []time.Duration) {
	reportLatenciesAs(b, "", latencies)
}

// reportLatenciesAs reports the p50 and p99 of the latencies under
// prefix + "p50-ms" and prefix + "p99-ms".
func reportLatenciesAs(b *testing.B, prefix string, latencies []time.Duration) {
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Milliseconds()), prefix+"p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Milliseconds()), prefix+"p99-ms")
}
