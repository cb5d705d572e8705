package tasks

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
)

// The erasure races: forget against every path that can create a contact
// or a membership, on real transactions, raceRounds rounds each with
// randomized timing. Afterwards the user is erased for good (contract
// §5.3, §7, §11): no live contact, exactly one contact row when the user
// had none, no active or live membership, and no transition of a
// membership the erasure did not see.

// forget erases the user.
func (e *env) forget(userID string) {
	e.t.Helper()
	_, err := Forget(e.ctx, e.deps, userID)
	require.NoError(e.t, err)
}

// requireErased checks that the user is erased for good. contacts is how
// many contact rows the user must have (0: any).
func (e *env) requireErased(round int, userID string, contacts int) {
	e.t.Helper()
	require.Zero(e.t, e.count("SELECT count(*) FROM contacts WHERE external_id = ? AND deleted_at IS NULL", userID),
		"round %d, user %s: no live contact", round, userID)
	if contacts > 0 {
		require.Equal(e.t, contacts, e.count("SELECT count(*) FROM contacts WHERE external_id = ?", userID),
			"round %d, user %s: contact rows", round, userID)
	}
	require.Zero(e.t, e.count("SELECT count(*) FROM bucket_memberships WHERE user_id = ? AND deleted_at IS NULL", userID),
		"round %d, user %s: every membership is erased; one the erasure missed was made after it", round, userID)
	// Every transition emitted belongs to a membership the erasure erased.
	require.Zero(e.t, e.count(`
		SELECT count(*) FROM user_events AS ev WHERE ev.user_id = ? AND ev.source = 'bucket' AND NOT EXISTS (
			SELECT 1 FROM bucket_memberships AS m WHERE m.user_id = ev.user_id
				AND m.bucket_id = ev.properties ->> 'bucketId' AND m.entry_count = (ev.properties ->> 'entryCount')::int
				AND m.deleted_at IS NOT NULL)`, userID), "round %d, user %s: a transition after the erasure", round, userID)
}

// raceForget runs, in each round, path for a fresh user and forget of
// that user at once, then checks the user is erased. prepare readies the
// round's user (a contact, a membership) before the race.
func raceForget(t *testing.T, files defs, prepare func(e *env, user string), path func(e *env, user string), contacts int) {
	t.Helper()
	e := newEnv(t, files)
	for round := range raceRounds {
		user := roundUsers(round, "erased", 1)[0]
		prepare(e, user)
		var wg sync.WaitGroup
		wg.Go(func() {
			jitter(10 * time.Millisecond)
			path(e, user)
		})
		wg.Go(func() {
			jitter(10 * time.Millisecond)
			e.forget(user)
		})
		wg.Wait()
		e.requireErased(round, user, contacts)
	}
}

func nothing(*env, string) {}

func TestRaceForgetIngestOfANewUser(t *testing.T) {
	t.Parallel()
	raceForget(t, defs{"buckets/recent.yaml": recentlyActive}, nothing, func(e *env, user string) {
		e.ingest("app.active", `{"userId":"`+user+`","contactProperties":{"plan":"pro"}}`)
	}, 1)
}

func TestRaceForgetIngestOfAMember(t *testing.T) {
	t.Parallel()
	raceForget(t, defs{"buckets/engaged-pro.yaml": proAndActive}, func(e *env, user string) {
		e.ingest("app.active", `{"userId":"`+user+`","contactProperties":{"plan":"pro"}}`)
		require.Equal(t, db.StatusActive, e.status("engaged-pro", user))
	}, func(e *env, user string) {
		// Leaves (free) and joins again (pro) in turn: a transition either way.
		plan := map[bool]string{true: "free", false: "pro"}[e.status("engaged-pro", user) == db.StatusActive]
		e.ingest("app.active", `{"userId":"`+user+`","contactProperties":{"plan":"`+plan+`"}}`)
	}, 1)
}

func TestRaceForgetBatch(t *testing.T) {
	t.Parallel()
	raceForget(t, defs{"buckets/recent.yaml": "id: recent\nname: Recent\ncriteria: {type: event, eventName: key.action, check: exists, within: 1h}\n"},
		nothing, func(e *env, user string) {
			e.batch([]string{user + "-neighbour-1", user, user + "-neighbour-2"})
		}, 1)
}

func TestRaceForgetSweepJoin(t *testing.T) {
	t.Parallel()
	raceForget(t, defs{"buckets/dormant.yaml": wentDormant}, func(e *env, user string) {
		e.backfilled("dormant")
		e.contact(user, `{}`)
		e.events(user, "app.active", 30*day) // lapsed: the next sweep joins them
	}, func(e *env, _ string) {
		e.sweep(ReconcileInput{})
	}, 1)
}

func TestRaceForgetBackfill(t *testing.T) {
	t.Parallel()
	raceForget(t, defs{"buckets/dormant.yaml": wentDormant}, func(e *env, user string) {
		e.contact(user, `{}`)
		e.events(user, "app.active", 30*day) // the backfill joins them silently
	}, func(e *env, _ string) {
		_, err := Backfill(e.ctx, e.deps, BackfillInput{BucketID: "dormant", Mode: ModeFirstTime})
		require.NoError(t, err)
	}, 1)
}

// An erasure whose statements stay open for two seconds while an ingest
// of the user runs: the ingest waits for it, then finds the user erased.
func TestIngestWaitsForAnErasureInProgress(t *testing.T) {
	t.Parallel()
	for _, withContact := range []bool{false, true} {
		e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive})
		if withContact {
			e.contact("u", `{}`)
		}
		tx, err := e.db.BeginTx(e.ctx, nil)
		require.NoError(t, err)
		_, err = db.EraseUser(e.ctx, tx, "u", t0)
		require.NoError(t, err)

		done := make(chan IngestOutput)
		go func() {
			out, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", []byte(`{"userId":"u"}`), "")
			require.NoError(t, err)
			done <- out
		}()
		select {
		case out := <-done:
			t.Fatalf("the ingest did not wait for the erasure: %+v", out)
		case <-time.After(2 * time.Second):
		}
		require.NoError(t, tx.Commit())
		out := <-done
		require.Equal(t, ReasonContactDeleted, out.Reason, "with a contact: %v", withContact)
		require.False(t, out.Stored)
		e.requireErased(0, "u", 1)
		require.Empty(t, e.transitions("u"))
	}
}

// Forgetting a user twice, or a user with no contact at once from two
// commands, leaves one contact row.
func TestForgetLeavesOneTombstone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { e.forget("nobody") })
	}
	wg.Wait()
	e.forget("nobody")
	require.Equal(t, 1, e.count("SELECT count(*) FROM contacts WHERE external_id = 'nobody'"))
}
