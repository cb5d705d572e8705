package tasks

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// The race tests run two paths that decide about the same (user, bucket)
// at once, on real transactions, for raceRounds rounds with randomized
// timing. After each round every user's membership must agree with the
// criteria over the committed data, and every transition must have been
// emitted once, with one push (contract §5.3).

const (
	raceRounds = 50
	// raceUsers are the users both paths decide about in a round.
	raceUsers = 20
	// raceFillers are members only the sweep decides about: they make the
	// sweep's statements take long enough for the other path to commit
	// between them.
	raceFillers = 300
)

const recentAction = "id: recent\nname: Recent\ncriteria: {type: event, eventName: key.action, check: exists, within: 1h}\n"

// jitter sleeps up to max, at random.
func jitter(max time.Duration) { time.Sleep(time.Duration(rand.Int64N(int64(max)))) }

// fixtureSource marks the membership rows a test wrote itself, which have
// no bucket:entered event.
const fixtureSource = "test-fixture"

// lapsedMembers makes each user a member whose only event is two hours old:
// a sweep of a 1h window would make them leave.
func (e *env) lapsedMembers(bucketID string, users ...string) {
	e.t.Helper()
	var rows []db.Membership
	var events []db.UserEvent
	for _, u := range users {
		rows = append(rows, db.Membership{UserID: u, BucketID: bucketID, Status: db.StatusActive,
			EnteredAt: e.clock.Now().Add(-3 * time.Hour), EntryCount: 1, Source: ptr(fixtureSource)})
		events = append(events, db.UserEvent{UserID: u, Event: "key.action", OccurredAt: e.clock.Now().Add(-2 * time.Hour)})
	}
	require.NoError(e.t, dbtest.InsertMemberships(e.ctx, e.db, rows))
	require.NoError(e.t, dbtest.InsertUserEvents(e.ctx, e.db, events))
}

func roundUsers(round int, kind string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("r%02d-%s-%03d", round, kind, i)
	}
	return out
}

// requireAgrees checks the rule of contract §5.3 for the users after a
// round: a user is an active member exactly when the criteria hold over
// the committed data, and each transition was emitted once.
func (e *env) requireAgrees(b *buckets.Bucket, round int, users []string) {
	e.t.Helper()
	for _, u := range users {
		props := buckets.Properties{}
		c, err := db.ContactByUser(e.ctx, e.db, u)
		require.NoError(e.t, err)
		if c != nil {
			props = c.PropertyMap()
		}
		holds, err := buckets.Evaluate(e.ctx, b.Criteria, e.clock.Now(), db.UserFacts{IDB: e.db, UserID: u, Properties: props})
		require.NoError(e.t, err)
		require.Equal(e.t, holds, e.status(b.ID, u) == db.StatusActive,
			"round %d, user %s: member must equal the criteria over committed data (criteria hold: %v); memberships %+v",
			round, u, holds, e.memberships(b.ID, u))
		e.requireEmittedOnce(b, u)
	}
}

// requireEmittedOnce checks the user's rows and transition events: epochs
// 1..n with at most one active row, one bucket:left per ended row, one
// bucket:entered per row the engine joined with an emission, and one push
// per event.
func (e *env) requireEmittedOnce(b *buckets.Bucket, userID string) {
	e.t.Helper()
	rows := e.memberships(b.ID, userID)
	keys := map[string]int{}
	for _, ev := range e.transitions(userID) {
		keys[*ev.IdempotencyKey]++
	}
	active := 0
	for i, r := range rows {
		require.Equal(e.t, i+1, r.EntryCount, "user %s: epochs are consecutive", userID)
		leftKey := fmt.Sprintf("bucket:%s:%s:left:%d", b.ID, userID, r.EntryCount)
		enteredKey := fmt.Sprintf("bucket:%s:%s:entered:%d", b.ID, userID, r.EntryCount)
		if r.Status == db.StatusActive {
			active++
			require.Zero(e.t, keys[leftKey], "user %s: an active row has no leave", userID)
		} else {
			require.Equal(e.t, 1, keys[leftKey], "user %s: one leave of epoch %d", userID, r.EntryCount)
		}
		if src := deref(r.Source); src != fixtureSource && src != string(SourceBackfill) {
			require.Equal(e.t, 1, keys[enteredKey], "user %s: one join of epoch %d", userID, r.EntryCount)
		}
	}
	require.LessOrEqual(e.t, active, 1, "user %s", userID)
	require.Zero(e.t, e.count(`
		SELECT count(*) FROM user_events AS ev
		WHERE ev.user_id = ? AND ev.source = 'bucket'
			AND (SELECT count(*) FROM bucket_event_outbox AS o WHERE o.idempotency_key = ev.idempotency_key) <> 1`, userID),
		"user %s: one push per transition event", userID)
}

// TestRaceIngestSweep races the sweep's set-based leaves with ingests of
// fresh events for members whose window lapsed: the ingest sees an active
// member and does nothing, so the sweep must not leave them on its older
// snapshot.
func TestRaceIngestSweep(t *testing.T) {
	t.Parallel()
	raceIngestSweep(t, nil)
}

// TestRaceGatheredIngestsSweep is TestRaceIngestSweep with the ingests
// gathered, as a running worker's are: concurrent ingests share rounds,
// each deciding about many raced users in one transaction.
func TestRaceGatheredIngestsSweep(t *testing.T) {
	t.Parallel()
	raceIngestSweep(t, NewGatherer())
}

func raceIngestSweep(t *testing.T, g *Gatherer) {
	e := newEnv(t, defs{"buckets/recent.yaml": recentAction})
	e.deps.Gatherer = g
	b := e.bucket("recent")
	for round := range raceRounds {
		raced, fillers := roundUsers(round, "raced", raceUsers), roundUsers(round, "filler", raceFillers)
		e.lapsedMembers(b.ID, append(raced, fillers...)...)

		var wg sync.WaitGroup
		wg.Go(func() {
			jitter(10 * time.Millisecond)
			e.sweep(ReconcileInput{})
		})
		for _, u := range raced {
			wg.Go(func() {
				jitter(40 * time.Millisecond)
				e.ingest("key.action", `{"userId":"`+u+`"}`)
			})
		}
		wg.Wait()
		e.requireAgrees(b, round, raced)
		for _, u := range fillers[:5] {
			require.Equal(t, db.StatusLeft, e.status(b.ID, u))
		}
	}
}

// twiceBucket holds a user with two key.action in the last hour.
const twiceBucket = "id: twice\nname: Twice\n" +
	"criteria: {type: event, eventName: key.action, check: count, operator: gte, value: 2, within: 1h}\n"

// raceSweepFresh races the sweep, in each round, with fresh events for
// the round's lapsed members of twiceBucket, which fresh sends (with wg)
// so that together they make each member hold again.
func raceSweepFresh(t *testing.T, fresh func(e *env, raced []string, wg *sync.WaitGroup)) {
	t.Helper()
	e := newEnv(t, defs{"buckets/twice.yaml": twiceBucket})
	b := e.bucket("twice")
	for round := range raceRounds {
		raced, fillers := roundUsers(round, "raced", raceUsers), roundUsers(round, "filler", raceFillers)
		e.lapsedMembers(b.ID, append(raced, fillers...)...)

		var wg sync.WaitGroup
		wg.Go(func() {
			jitter(10 * time.Millisecond)
			e.sweep(ReconcileInput{})
		})
		fresh(e, raced, &wg)
		wg.Wait()
		e.requireAgrees(b, round, raced)
	}
}

// TestRaceTwoIngestsSweep races two ingests per user — together they make
// a lapsed member hold again, neither does alone — with the sweep.
func TestRaceTwoIngestsSweep(t *testing.T) {
	t.Parallel()
	raceSweepFresh(t, func(e *env, raced []string, wg *sync.WaitGroup) {
		for _, u := range raced {
			for range 2 {
				wg.Go(func() {
					jitter(40 * time.Millisecond)
					e.ingest("key.action", `{"userId":"`+u+`"}`)
				})
			}
		}
	})
}

// TestRaceBatchesIngestsSweep races, for lapsed members of a count bucket,
// two batches and a single ingest per user — any two of the three events
// make the member hold again, none alone does — with the sweep. The
// batches lock many users at once, in rounds, where an ingest locks one.
func TestRaceBatchesIngestsSweep(t *testing.T) {
	t.Parallel()
	raceSweepFresh(t, func(e *env, raced []string, wg *sync.WaitGroup) {
		reversed := slices.Clone(raced)
		slices.Reverse(reversed)
		for _, users := range [][]string{raced, reversed} {
			wg.Go(func() {
				jitter(20 * time.Millisecond)
				e.batch(users)
			})
		}
		for _, u := range raced[:raceUsers/2] {
			wg.Go(func() {
				jitter(40 * time.Millisecond)
				e.ingest("key.action", `{"userId":"`+u+`"}`)
			})
		}
	})
}

// raceExpiry makes the round's users members of a fastExpiry bucket with
// join, lets every window lapse, and races each member's expiry timer with
// the fresh events refresh sends (with wg): a member who qualifies again by
// the time the timer's CAS runs is not left.
func raceExpiry(t *testing.T, join func(e *env, users []string), refresh func(e *env, users []string, wg *sync.WaitGroup)) {
	t.Helper()
	e := newEnv(t, defs{"buckets/active.yaml": "id: active\nname: Active\nfastExpiry: true\n" +
		"criteria: {type: event, eventName: key.action, check: exists, within: 1h}\n"})
	b := e.bucket("active")
	for round := range raceRounds {
		raced := roundUsers(round, "raced", raceUsers)
		join(e, raced)
		e.clock.Advance(time.Hour + time.Second) // every window has lapsed
		arms := e.armed()

		var wg sync.WaitGroup
		for _, u := range raced {
			row := e.memberships(b.ID, u)[0]
			wg.Go(func() {
				jitter(20 * time.Millisecond)
				e.expire(arms[row.ID])
			})
		}
		refresh(e, raced, &wg)
		wg.Wait()
		e.requireAgrees(b, round, raced)
	}
}

// TestRaceIngestExpiry races each member's expiry timer with an ingest of
// a fresh event.
func TestRaceIngestExpiry(t *testing.T) {
	t.Parallel()
	ingestEach := func(e *env, users []string) {
		for _, u := range users {
			e.ingest("key.action", `{"userId":"`+u+`"}`)
		}
	}
	raceExpiry(t, ingestEach, func(e *env, users []string, wg *sync.WaitGroup) {
		for _, u := range users {
			wg.Go(func() {
				jitter(20 * time.Millisecond)
				e.ingest("key.action", `{"userId":"`+u+`"}`)
			})
		}
	})
}

// TestRaceBatchExpiry races the members' expiry timers with a batch of
// fresh events for them.
func TestRaceBatchExpiry(t *testing.T) {
	t.Parallel()
	raceExpiry(t, (*env).batch, func(e *env, users []string, wg *sync.WaitGroup) {
		wg.Go(func() {
			jitter(20 * time.Millisecond)
			e.batch(users)
		})
	})
}

// batch ingests one key.action for each user in one batch.
func (e *env) batch(users []string) {
	elements := make([]string, len(users))
	for i, u := range users {
		elements[i] = element("key.action", u, "")
	}
	_, err := HandleBatch(e.ctx, e.deps, IngestStore, []byte(`{"events":[`+strings.Join(elements, ",")+`]}`), "")
	require.NoError(e.t, err)
}

// TestRaceSweepBackfill races a sweep with the re-evaluation of the same
// bucket after its criteria changed: both leave members, each leave must
// happen once.
func TestRaceSweepBackfill(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentAction})
	b := e.bucket("recent")
	require.NoError(t, db.SetCriteriaHash(e.ctx, e.db, "recent", "an older criteria", t0))
	for round := range raceRounds {
		lapsed, fresh := roundUsers(round, "lapsed", raceFillers), roundUsers(round, "fresh", raceUsers)
		e.lapsedMembers(b.ID, lapsed...)
		for _, u := range fresh {
			e.contact(u, `{}`)
			e.events(u, "key.action", time.Minute)
		}

		var wg sync.WaitGroup
		wg.Go(func() {
			jitter(10 * time.Millisecond)
			e.sweep(ReconcileInput{})
		})
		wg.Go(func() {
			jitter(10 * time.Millisecond)
			_, err := Backfill(e.ctx, e.deps, BackfillInput{BucketID: b.ID, Mode: ModeReeval})
			require.NoError(t, err)
		})
		wg.Wait()
		e.requireAgrees(b, round, append(lapsed, fresh...))
	}
}
