package tasks

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
)

// roundGate holds the first round of ingest at its membership lock until
// released, and counts the rounds (one membership lock each).
type roundGate struct {
	mu      sync.Mutex
	rounds  int
	held    chan struct{} // closed once the first round waits
	release chan struct{}
}

func newRoundGate() *roundGate {
	return &roundGate{held: make(chan struct{}), release: make(chan struct{})}
}

func (g *roundGate) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	if dbCaller() != "db.LockUserMemberships" {
		return ctx
	}
	g.mu.Lock()
	g.rounds++
	first := g.rounds == 1
	g.mu.Unlock()
	if first {
		close(g.held)
		<-g.release
	}
	return ctx
}

func (g *roundGate) AfterQuery(context.Context, *bun.QueryEvent) {}

// requireQueued waits until n events wait in the gatherer's queue.
func requireQueued(t testing.TB, g *Gatherer, n int, msg string) {
	t.Helper()
	require.Eventually(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.queue) == n
	}, 10*time.Second, time.Millisecond, msg)
}

// gatheredIngests starts an ingest of each payload through a gatherer of
// one round in flight, the first alone: its round is held (gate) until
// every other waits in the gatherer's queue, in the order given. It
// returns their outputs and errors, by payload.
func (e *env) gatheredIngests(gate *roundGate, payloads ...string) ([]IngestOutput, []error) {
	e.t.Helper()
	g := newGatherer(1)
	e.deps.Gatherer = g
	outs, errs := make([]IngestOutput, len(payloads)), make([]error, len(payloads))
	var wg sync.WaitGroup
	ingest := func(i int) {
		wg.Go(func() {
			outs[i], errs[i] = HandleIngest(e.ctx, e.deps, IngestStore, "app.active", []byte(payloads[i]), fmt.Sprintf("run-%d", i))
		})
	}
	ingest(0)
	<-gate.held
	for i := 1; i < len(payloads); i++ {
		ingest(i)
		requireQueued(e.t, g, i, "the other ingests wait for the held round, in order")
	}
	close(gate.release)
	wg.Wait()
	return outs, errs
}

// Ingests that arrive while a round is in flight go together in the next,
// each with the result its single ingest would have had; a second event of
// a user in the queue waits for a round of its own, after the first.
func TestGathererSharesRounds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	e.deps.Metrics = NewMetrics(prometheus.NewRegistry(), e.deps.Buckets)
	gate := newRoundGate()
	e.db.AddQueryHook(gate)

	payloads := []string{`{"userId":"first"}`}
	for i := range 10 {
		payloads = append(payloads, fmt.Sprintf(`{"userId":"u%d","contactProperties":{"n":%d}}`, i, i))
	}
	payloads = append(payloads, `{"userId":"u3","contactProperties":{"n":33}}`)
	outs, errs := e.gatheredIngests(gate, payloads...)

	require.Equal(t, 3, gate.rounds, "the first alone, the ten users together, then u3's second event")
	var rounds dto.Metric
	require.NoError(t, e.deps.Metrics.roundEvents.Write(&rounds))
	require.EqualValues(t, 3, rounds.GetHistogram().GetSampleCount(), "the rounds are counted")
	require.EqualValues(t, 12, rounds.GetHistogram().GetSampleSum(), "with their events")
	for i, out := range outs {
		require.NoError(t, errs[i])
		require.True(t, out.Stored, "payload %d", i)
		if i == len(outs)-1 {
			require.Empty(t, out.Transitions, "u3 is a member already")
			continue
		}
		require.Len(t, out.Transitions, 1, "payload %d", i)
		require.Equal(t, Entered, out.Transitions[0].Transition)
	}
	for i := range 10 {
		u := fmt.Sprintf("u%d", i)
		require.Equal(t, []string{"bucket:recent:" + u + ":entered:1"}, e.keys(u), "each join once, to its own user")
		require.Equal(t, db.StatusActive, e.status("recent", u))
	}
	require.EqualValues(t, 33, e.contactProps("u3")["n"], "u3's events in the order they came")
	require.Equal(t, 2, e.count(`SELECT count(*) FROM user_events WHERE user_id = 'u3' AND source = 'ingest'`))
}

// poisonEnv is an env whose database rejects an event with the property
// poison, and whose first round of ingest is held (newRoundGate).
func poisonEnv(t *testing.T) (*env, *roundGate) {
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	_, err := e.db.ExecContext(e.ctx, `ALTER TABLE user_events ADD CONSTRAINT no_poison CHECK (properties->>'poison' IS NULL)`)
	require.NoError(t, err)
	gate := newRoundGate()
	e.db.AddQueryHook(gate)
	return e, gate
}

const poisoned = `"properties":{"poison":true}`

// requireJoined checks that each of the payloads was stored and made its
// user join, once.
func (e *env) requireJoined(outs []IngestOutput, errs []error, payloads ...int) {
	e.t.Helper()
	for _, i := range payloads {
		require.NoError(e.t, errs[i])
		require.True(e.t, outs[i].Stored, "payload %d", i)
		require.Len(e.t, outs[i].Transitions, 1, "payload %d", i)
		u := outs[i].Transitions[0].UserID
		require.Equal(e.t, []string{"bucket:recent:" + u + ":entered:1"}, e.keys(u))
	}
}

// An event the database rejects fails its own run only: the round it was
// gathered in fails, and its events are ingested again one by one.
func TestGathererIsolatesAFailingEvent(t *testing.T) {
	t.Parallel()
	e, gate := poisonEnv(t)
	outs, errs := e.gatheredIngests(gate, `{"userId":"first"}`, `{"userId":"a"}`, `{"userId":"c",`+poisoned+`}`, `{"userId":"b"}`)

	require.Equal(t, 3, gate.rounds, "first, then a and b alone: the round of three and c alone fail before their membership lock")
	require.ErrorContains(t, errs[2], "no_poison")
	e.requireJoined(outs, errs, 0, 1, 3)
	require.Zero(t, e.count(`SELECT count(*) FROM contacts WHERE external_id = 'c'`), "nothing of a failed run is written")
}

// A user's second event waits for a round of its own, so that a round is
// one transaction: had a's two events shared a round, the first would
// have committed before the second failed, and been taken for a
// duplicate when the round's events were ingested again one by one.
func TestGathererRoundIsOneTransaction(t *testing.T) {
	t.Parallel()
	e, gate := poisonEnv(t)
	outs, errs := e.gatheredIngests(gate, `{"userId":"first"}`, `{"userId":"a"}`, `{"userId":"b"}`, `{"userId":"a",`+poisoned+`}`)

	require.ErrorContains(t, errs[3], "no_poison")
	e.requireJoined(outs, errs, 0, 1, 2)
	require.Equal(t, 1, e.count(`SELECT count(*) FROM user_events WHERE user_id = 'a' AND source = 'ingest'`))
}

// A round held by a lock holds up its own events, and the later events of
// its users, which keep their order; other users' events go in another
// round meanwhile.
func TestGathererHeldRoundHoldsOnlyItsOwn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
	gate := newRoundGate()
	e.db.AddQueryHook(gate)
	e.deps.Gatherer = newGatherer(2)
	ingest := func(payload, run string) <-chan IngestOutput {
		done := make(chan IngestOutput, 1)
		go func() {
			out, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", []byte(payload), run)
			assert.NoError(t, err)
			done <- out
		}()
		return done
	}

	first := ingest(`{"userId":"first","contactProperties":{"n":1}}`, "run-1")
	<-gate.held
	again := ingest(`{"userId":"first","contactProperties":{"n":2}}`, "run-2")
	requireQueued(t, e.deps.Gatherer, 1, "the user's second event waits while the user is in a round, though a round is free")
	select {
	case other := <-ingest(`{"userId":"other"}`, "run-3"):
		require.Len(t, other.Transitions, 1)
	case <-time.After(10 * time.Second):
		t.Fatal("another user's event waited for the held round")
	}
	select {
	case <-again:
		t.Fatal("the user's second event went before the first")
	case <-time.After(100 * time.Millisecond):
	}

	close(gate.release)
	require.Len(t, (<-first).Transitions, 1)
	require.Empty(t, (<-again).Transitions, "a member already")
	require.EqualValues(t, 2, e.contactProps("first")["n"], "the user's events in the order they came")
}
