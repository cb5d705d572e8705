package db_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestClaimOutboxTakesTheDueInOrder: a claim leases the due rows no one
// holds, every other push before the arms of expiry timers, then by when
// they became due and by id; and a second claim takes the rest.
func TestClaimOutboxTakesTheDueInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, _ := dbtest.New(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	later := now.Add(time.Minute)
	row := func(key string, due time.Time) db.OutboxEvent {
		return db.OutboxEvent{EventKey: key, Payload: json.RawMessage(`{}`), CreatedAt: now, AvailableAt: due}
	}
	rows := []db.OutboxEvent{
		row(db.ArmExpiryEvent, now.Add(-time.Hour)), // 1: an arm goes after every other push
		row("bucket:entered:a", now.Add(-time.Second)),
		row("bucket:entered:a", now.Add(-time.Minute)), // 3: due first
		row("bucket:left:a", later),                    // 4: not due
		row("bucket:left:a", now.Add(-time.Second)),    // 5: ties with 2, after it by id
		row("bucket:left:b", now.Add(-time.Hour)),      // 6: dispatched
		row("bucket:left:c", now.Add(-time.Hour)),      // 7: leased by another dispatcher
		row(db.ArmExpiryEvent, now.Add(-time.Minute)),  // 8
	}
	dispatched := now.Add(-time.Minute)
	rows[5].DispatchedAt = &dispatched
	rows[6].LeasedUntil = &later
	require.NoError(t, db.InsertOutbox(ctx, conn, rows))

	ids := func(rows []db.OutboxEvent) []int64 {
		out := make([]int64, len(rows))
		for i, r := range rows {
			out[i] = r.ID
		}
		return out
	}
	first, err := db.ClaimOutbox(ctx, conn, now, time.Minute, 3)
	require.NoError(t, err)
	require.Equal(t, []int64{3, 2, 5}, ids(first))
	for _, r := range first {
		require.NotNil(t, r.LeasedUntil)
		require.True(t, r.LeasedUntil.Equal(later), "leased until now + lease")
	}
	rest, err := db.ClaimOutbox(ctx, conn, now, time.Minute, 10)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 8}, ids(rest), "the arms, by when they became due; the leased rows are skipped")
	none, err := db.ClaimOutbox(ctx, conn, now, time.Minute, 10)
	require.NoError(t, err)
	require.Empty(t, none)
}

// TestClaimOutboxWalksItsIndex: the claim's plan walks
// bucket_event_outbox_claim_idx and sorts nothing, so that a claim reads
// the rows it takes rather than every pending row. The statement must
// keep the index's expression and order for that.
func TestClaimOutboxWalksItsIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, _ := dbtest.New(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	_, err := conn.NewRaw(`INSERT INTO bucket_event_outbox (event_key, payload, idempotency_key, created_at, available_at)
		SELECT CASE WHEN i % 10 = 0 THEN ?0 ELSE 'bucket:left:a' END, '{}', 'k' || i, ?1, ?1::timestamptz - i * interval '1 second'
		FROM generate_series(1, 20000) i`, db.ArmExpiryEvent, now).Exec(ctx)
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, "ANALYZE bucket_event_outbox")
	require.NoError(t, err)

	hook := &lastQuery{}
	conn.AddQueryHook(hook)
	_, err = db.ClaimOutbox(ctx, conn, now, time.Minute, 1000)
	require.NoError(t, err)
	claim := hook.get()
	require.Contains(t, claim, "bucket_event_outbox")

	var lines []string
	require.NoError(t, conn.NewRaw("EXPLAIN "+claim).Scan(ctx, &lines))
	plan := strings.Join(lines, "\n")
	require.Contains(t, plan, "bucket_event_outbox_claim_idx", plan)
	require.NotContains(t, plan, "Sort", plan)
}

// lastQuery remembers the last statement run.
type lastQuery struct {
	mu    sync.Mutex
	query string
}

func (h *lastQuery) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context { return ctx }

func (h *lastQuery) AfterQuery(_ context.Context, e *bun.QueryEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !strings.HasPrefix(e.Query, "EXPLAIN") {
		h.query = e.Query
	}
}

func (h *lastQuery) get() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.query
}
