package tasks

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

func levelIDs(levels [][]*buckets.Bucket) [][]string {
	out := make([][]string, len(levels))
	for i, l := range levels {
		for _, b := range l {
			out[i] = append(out[i], b.ID)
		}
		slices.Sort(out[i]) // a level keeps the registry's order
	}
	return out
}

// TestSweepLevels: a bucket is in the level after the last bucket it
// references, through buckets that are not swept as well.
func TestSweepLevels(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentBucket, "buckets/engaged.yaml": engagedBucket,
		"buckets/vip.yaml": vipBucket, "buckets/lapsed.yaml": lapsedBucket, "buckets/pro.yaml": proBucket})
	levels, err := SweepLevels(e.deps.Buckets, nil)
	require.NoError(t, err)
	require.Equal(t, [][]string{{"pro", "recent"}, {"engaged", "lapsed"}, {"vip"}}, levelIDs(levels))

	// vip reads engaged, which reads recent: swept without engaged, vip
	// still comes after recent.
	levels, err = SweepLevels(e.deps.Buckets, []string{"vip", "recent"})
	require.NoError(t, err)
	require.Equal(t, [][]string{{"recent"}, {"vip"}}, levelIDs(levels))
	levels, err = SweepLevels(e.deps.Buckets, []string{"vip", "pro"})
	require.NoError(t, err)
	require.Equal(t, [][]string{{"pro", "vip"}}, levelIDs(levels))

	_, err = SweepLevels(e.deps.Buckets, []string{"nope"})
	require.ErrorIs(t, err, ErrInvalidInput)
}

// TestSweepWaitsForWhatItReads: a bucket's sweep starts only once the
// sweeps of every bucket it references have finished, the buckets of one
// level run at once, and a bucket whose sweep failed is reported while the
// others go on.
func TestSweepWaitsForWhatItReads(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentBucket, "buckets/engaged.yaml": engagedBucket,
		"buckets/vip.yaml": vipBucket, "buckets/lapsed.yaml": lapsedBucket, "buckets/pro.yaml": proBucket})
	var mu sync.Mutex
	started, finished := map[string]time.Time{}, map[string]time.Time{}
	running, most := 0, 0
	out, err := ReconcileBy(e.ctx, e.deps, ReconcileInput{DryRun: true}, func(ctx context.Context, b *buckets.Bucket, dryRun bool) (ReconcileOutput, error) {
		mu.Lock()
		started[b.ID] = time.Now()
		running++
		most = max(most, running)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		finished[b.ID] = time.Now()
		running--
		mu.Unlock()
		if b.ID == "lapsed" {
			return ReconcileOutput{}, errors.New("the replica went away")
		}
		return ReconcileOutput{Joined: 1, DryRun: dryRun, Buckets: []BucketSweep{{BucketID: b.ID, Joined: 1}}}, nil
	}, 10)
	require.NoError(t, err)
	for dependent, references := range map[string][]string{"engaged": {"recent"}, "lapsed": {"recent"}, "vip": {"engaged"}} {
		for _, ref := range references {
			require.False(t, started[dependent].Before(finished[ref]), "%s started before %s finished", dependent, ref)
		}
	}
	require.Equal(t, 2, most, "the buckets of a level at once")
	require.Equal(t, 4, out.Joined)
	require.Len(t, out.Buckets, 5)
	var failed []string
	for _, b := range out.Buckets {
		if b.Error != "" {
			failed = append(failed, b.BucketID+": "+b.Error)
		}
	}
	require.Equal(t, []string{"lapsed: the replica went away"}, failed)
}

// TestReconcileBucketSweepsOneBucket: the child's sweep of one bucket, and
// its input.
func TestReconcileBucketSweepsOneBucket(t *testing.T) {
	t.Parallel()
	e := newEnv(t, defs{"buckets/recent.yaml": recentBucket, "buckets/pro.yaml": proBucket})
	old := e.clock.Now().Add(-8 * 24 * time.Hour)
	require.NoError(t, dbtest.InsertUserEvents(e.ctx, e.db, dbtest.Events([]string{"u"}, "app.active", old)))
	require.NoError(t, dbtest.InsertMemberships(e.ctx, e.db, dbtest.Members([]string{"u"}, "recent", old)))
	out, err := ReconcileBucket(e.ctx, e.deps, ReconcileBucketInput{BucketID: "recent"})
	require.NoError(t, err)
	require.Equal(t, 1, out.Reconciled)
	require.Len(t, out.Buckets, 1)
	require.Equal(t, "recent", out.Buckets[0].BucketID)
	require.Equal(t, db.StatusLeft, e.memberships("recent", "u")[0].Status)

	_, err = ReconcileBucket(e.ctx, e.deps, ReconcileBucketInput{BucketID: "nope"})
	require.ErrorIs(t, err, ErrInvalidInput)
	in, err := ParseReconcileBucketInput([]byte(`{"bucketId":"recent","dryRun":true}`))
	require.NoError(t, err)
	require.Equal(t, ReconcileBucketInput{BucketID: "recent", DryRun: true}, in)
	for _, bad := range []string{``, `{}`, `{"bucketIds":["a"]}`, `{"bucketId":1}`} {
		_, err := ParseReconcileBucketInput([]byte(bad))
		require.ErrorIs(t, err, ErrInvalidInput, bad)
	}
}
