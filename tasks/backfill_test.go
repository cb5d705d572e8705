package tasks

import (
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

func (e *env) backfill(bucketID string, mode BackfillMode) BackfillOutput {
	e.t.Helper()
	job, err := db.CreateBackfillJob(e.ctx, e.db, bucketID, JobFormat(mode), db.JobPending, e.clock.Now())
	require.NoError(e.t, err)
	out, err := Backfill(e.ctx, e.deps, BackfillInput{JobID: job.ID, BucketID: bucketID, Mode: mode})
	require.NoError(e.t, err)
	return out
}

func (e *env) job(id string) db.ImportJob {
	e.t.Helper()
	job, err := db.ImportJobByID(e.ctx, e.db, id)
	require.NoError(e.t, err)
	require.NotNil(e.t, job)
	return *job
}

const trialBucket = `
id: trial
name: Trial
maxDwell: 14d
criteria: {type: property, property: plan, operator: eq, value: trial}
`

func TestFirstTimeBackfillJoinsSilently(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/trial.yaml": trialBucket, "buckets/dormant.yaml": wentDormant})
	e.contact("on-trial", `{"plan":"trial"}`)
	e.contact("returning", `{"plan":"trial"}`)
	e.left("trial", "returning", t0.Add(-40*day), t0.Add(-20*day))
	e.contact("paying", `{"plan":"pro"}`)
	e.contact("erased", `{"plan":"trial"}`)
	e.setDeleted("erased", &t0)
	e.events("no-contact", "app.active", 30*day) // lapsed, but without a contact
	e.contact("lapsed", `{}`)
	e.events("lapsed", "app.active", 30*day)
	e.contact("never-active", `{}`)

	out := e.backfill("trial", ModeFirstTime)
	require.Equal(t, db.JobCompleted, out.Status)
	require.Equal(t, 2, out.Joined)
	rows := e.memberships("trial", "on-trial")
	require.Len(t, rows, 1)
	require.Equal(t, string(SourceBackfill), *rows[0].Source)
	require.Equal(t, 1, rows[0].EntryCount)
	require.Equal(t, t0.Add(14*day), rows[0].MaxDwellAt.UTC(), "max_dwell_at stamped")
	returning := e.memberships("trial", "returning")
	require.Equal(t, 2, returning[1].EntryCount, "epoch 1 + earlier rows")
	require.Equal(t, "none", e.status("trial", "paying"))
	require.Equal(t, "none", e.status("trial", "erased"))
	job := e.job(out.JobID)
	require.Equal(t, db.JobCompleted, job.Status)
	require.Equal(t, 2, job.ProcessedRows)

	out = e.backfill("dormant", ModeFirstTime)
	require.Equal(t, 1, out.Joined)
	require.Equal(t, db.StatusActive, e.status("dormant", "lapsed"))
	require.Equal(t, "none", e.status("dormant", "no-contact"), "events without a contact are not materialized")
	require.Equal(t, "none", e.status("dormant", "never-active"))

	require.Equal(t, 0, e.count("SELECT count(*) FROM user_events WHERE source = 'bucket'"), "no bucket:entered")
	require.Equal(t, 0, e.count("SELECT count(*) FROM bucket_event_outbox"))
	configs, err := db.BucketConfigs(e.ctx, e.db)
	require.NoError(t, err)
	require.Equal(t, e.bucket("trial").CriteriaHash, *configs["trial"].CriteriaHash)

	again := e.backfill("trial", ModeFirstTime)
	require.Equal(t, 0, again.Joined, "a second run joins nobody")

	// With the hash recorded, the sweep's join pass opens.
	require.Empty(t, e.sweep(ReconcileInput{BucketIDs: []string{"dormant"}}).bucket("dormant").JoinsSkipped)
}

func TestCriteriaChangeReevaluates(t *testing.T) {
	t.Parallel()
	v1 := newEnv(t, defs{"buckets/trial.yaml": trialBucket, "journeys/nurture.yaml": `
id: nurture
trigger: {event: bucket:entered:trial}
exitOn: [{event: bucket:left:trial}]
`})
	v1.contact("trial-only", `{"plan":"trial"}`)
	v1.contact("trial-and-big", `{"plan":"trial","seats":50}`)
	v1.contact("big-only", `{"plan":"pro","seats":50}`)
	v1.backfill("trial", ModeFirstTime)
	require.NoError(t, dbtest.InsertJourneyStates(v1.ctx, v1.db, []db.JourneyState{
		{UserID: "trial-only", UserEmail: "t@x", JourneyID: "nurture", CurrentNodeID: "n", Status: "waiting"},
	}))

	// The worker restarts with edited criteria: plan trial and 10+ seats, or 40+ seats.
	v2 := newEnvOn(t, v1.db, v1.clock, defs{"buckets/trial.yaml": `
id: trial
name: Trial
maxDwell: 14d
criteria:
  type: composite
  operator: or
  conditions:
    - type: composite
      operator: and
      conditions:
        - {type: property, property: plan, operator: eq, value: trial}
        - {type: property, property: seats, operator: gte, value: 10}
    - {type: property, property: seats, operator: gte, value: 40}
`, "journeys/nurture.yaml": `
id: nurture
trigger: {event: bucket:entered:trial}
exitOn: [{event: bucket:left:trial}]
`})
	v2.clock.Advance(day)
	var enqueued []BackfillInput
	v2.deps.EnqueueBackfill = func(_ context.Context, in BackfillInput) error {
		enqueued = append(enqueued, in)
		return nil
	}
	inputs, err := EnqueueBackfills(v2.ctx, v2.deps)
	require.NoError(t, err)
	require.Len(t, inputs, 1)
	require.Equal(t, ModeReeval, inputs[0].Mode)
	require.Equal(t, db.FormatReeval, v2.job(inputs[0].JobID).Format)
	require.Equal(t, inputs, enqueued)
	v2.sweep(ReconcileInput{}) // a sweep while the job is open enqueues no second one
	require.Len(t, enqueued, 1)

	out, err := Backfill(v2.ctx, v2.deps, inputs[0])
	require.NoError(t, err)
	require.Equal(t, 1, out.Left)
	require.Equal(t, 1, out.Joined)
	require.Equal(t, db.StatusLeft, v2.status("trial", "trial-only"))
	require.Equal(t, db.StatusActive, v2.status("trial", "trial-and-big"))
	require.Equal(t, db.StatusActive, v2.status("trial", "big-only"))

	events := v2.transitions("trial-only")
	require.Len(t, events, 1)
	require.Equal(t, "bucket:left:trial", events[0].Event)
	var props map[string]any
	require.NoError(t, json.Unmarshal(events[0].Properties, &props))
	require.Equal(t, "backfill", props["source"])
	require.Equal(t, "criteria", props["reason"])
	require.Empty(t, v2.transitions("big-only"), "new matchers join silently")
	require.Equal(t, 1, v2.count("SELECT count(*) FROM journey_states WHERE status = 'exited'"), "the leave ends the journey")

	job := v2.job(inputs[0].JobID)
	require.Equal(t, db.JobCompleted, job.Status)
	require.Equal(t, 2, job.ProcessedRows)
	configs, _ := db.BucketConfigs(v2.ctx, v2.db)
	require.Equal(t, v2.bucket("trial").CriteriaHash, *configs["trial"].CriteriaHash)
	again, err := EnqueueBackfills(v2.ctx, v2.deps)
	require.NoError(t, err)
	require.Empty(t, again, "up to date")
}

func TestFailedBackfillIsRecorded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/trial.yaml": trialBucket})
	job, err := db.CreateBackfillJob(e.ctx, e.db, "trial", db.FormatBackfill, db.JobPending, t0)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	out, err := Backfill(ctx, e.deps, BackfillInput{JobID: job.ID, BucketID: "trial", Mode: ModeFirstTime})
	require.Error(t, err)
	require.Equal(t, db.JobFailed, out.Status)
	failed := e.job(job.ID)
	require.Equal(t, db.JobFailed, failed.Status)
	require.Contains(t, string(failed.Errors), "context canceled")

	_, err = Backfill(e.ctx, e.deps, BackfillInput{BucketID: "nope", Mode: ModeFirstTime})
	require.ErrorIs(t, err, ErrInvalidInput)
}

func TestConcurrentBootsEnqueueOneJobPerBucket(t *testing.T) {
	t.Parallel()
	files := defs{"buckets/trial.yaml": trialBucket, "buckets/dormant.yaml": wentDormant, "buckets/power.yaml": powerUsers}
	first := newEnv(t, files)
	var mu sync.Mutex
	enqueued := map[string]int{}
	var replicas []*env
	for range 6 {
		replica := newEnvOn(t, first.db, first.clock, files)
		replica.deps.EnqueueBackfill = func(_ context.Context, in BackfillInput) error {
			mu.Lock()
			defer mu.Unlock()
			enqueued[in.BucketID]++
			return nil
		}
		replicas = append(replicas, replica)
	}
	for round := range 10 {
		require.NoError(t, dbtest.DeleteAll(first.ctx, first.db, (*db.ImportJob)(nil)))
		clear(enqueued)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, replica := range replicas {
			wg.Go(func() {
				<-start
				_, err := EnqueueBackfills(replica.ctx, replica.deps)
				require.NoError(t, err)
			})
		}
		close(start)
		wg.Wait()
		require.Equal(t, map[string]int{"trial": 1, "dormant": 1, "power": 1}, enqueued, "round %d", round)
		require.Equal(t, 3, first.count("SELECT count(*) FROM import_jobs"), "round %d", round)
	}
}

func TestStaleBackfillJobIsReplaced(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/trial.yaml": trialBucket})
	dead, err := db.CreateBackfillJob(e.ctx, e.db, "trial", db.FormatBackfill, db.JobProcessing, t0.Add(-3*time.Hour))
	require.NoError(t, err)
	e.deps.EnqueueBackfill = func(context.Context, BackfillInput) error { return nil }
	inputs, err := EnqueueBackfills(e.ctx, e.deps)
	require.NoError(t, err)
	require.Len(t, inputs, 1, "a job with no progress for twice the timeout is dead; a new one replaces it")
	require.Equal(t, db.JobFailed, e.job(dead.ID).Status)
}

func TestStoredHashesMatchTheContractVectors(t *testing.T) {
	t.Parallel()
	bs, report := buckets.Load(os.DirFS("../definitions"))
	require.NoError(t, report.Err())
	files := defs{}
	for _, b := range bs {
		data, err := os.ReadFile("../definitions/buckets/" + b.File[len("buckets/"):])
		require.NoError(t, err)
		files[b.File] = string(data)
	}
	e := newEnv(t, files)
	e.backfill("power-users", ModeFirstTime)
	e.backfill("went-dormant", ModeFirstTime)
	configs, err := db.BucketConfigs(e.ctx, e.db)
	require.NoError(t, err)
	require.Equal(t, "11804a22b835bdb9d0e61c43e5c570a74f833f3c25b5379695d5bbc6bc3fbb08", *configs["power-users"].CriteriaHash)
	require.Equal(t, "fed78aea11b2d12190bd2fce09eb761541bf9487cb862b2b26b46b29c37a5a22", *configs["went-dormant"].CriteriaHash)
}

func TestFailedEnqueueIsRetriedByTheNextDiff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/trial.yaml": trialBucket, "buckets/power.yaml": powerUsers})
	e.deps.EnqueueBackfill = func(_ context.Context, in BackfillInput) error {
		if in.BucketID == "trial" {
			return errHatchetDown
		}
		return nil
	}
	inputs, err := EnqueueBackfills(e.ctx, e.deps)
	require.ErrorIs(t, err, errHatchetDown)
	require.Len(t, inputs, 1, "the other bucket's run is still enqueued")
	require.Equal(t, "power", inputs[0].BucketID)
	require.Equal(t, 1, e.count("SELECT count(*) FROM import_jobs WHERE file_name = 'trial' AND status = 'failed'"))

	e.deps.EnqueueBackfill = func(context.Context, BackfillInput) error { return nil }
	inputs, err = EnqueueBackfills(e.ctx, e.deps)
	require.NoError(t, err)
	require.Len(t, inputs, 1)
	require.Equal(t, "trial", inputs[0].BucketID)
}
