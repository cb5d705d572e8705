package db_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// The statement builds the properties and the push in SQL; Go matches
// journeys' exitOn against Emission.Properties. Both must be the same
// document, with and without a reason.
func TestInsertEmissionsStoresTheirProperties(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, _ := dbtest.New(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	batches := []db.Emissions{
		{BucketID: "trial", BucketName: "On a trial", Transition: "entered", Source: "event", Events: []db.Emission{
			{Event: "bucket:entered:trial", IdempotencyKey: "bucket:trial:u1:entered:1", UserID: "u1", UserEmail: "u1@example.com", EntryCount: 1},
		}},
		{BucketID: "trial", BucketName: "On a trial", Transition: "left", Source: "reconcile", Reason: "maxDwell", Events: []db.Emission{
			{Event: "bucket:left:trial", IdempotencyKey: "bucket:trial:u2:left:3", UserID: "u2", EntryCount: 3},
			{Event: "bucket:left", IdempotencyKey: "bucket:trial:u2:left:3:generic", UserID: "u2", EntryCount: 3},
		}},
	}
	for _, batch := range batches {
		stored, err := db.InsertEmissions(ctx, conn, db.Schema{}, batch, now)
		require.NoError(t, err)
		require.Len(t, stored, len(batch.Events))

		for _, e := range batch.Events {
			require.True(t, stored[e.IdempotencyKey])
			want, err := json.Marshal(batch.Properties(e))
			require.NoError(t, err)

			var props, payload, meta string
			var source string
			var occurred time.Time
			require.NoError(t, conn.QueryRowContext(ctx, `
				SELECT e.properties::text, e.source, e.occurred_at, o.payload::text, o.additional_metadata::text
				FROM user_events AS e JOIN bucket_event_outbox AS o ON o.idempotency_key = e.idempotency_key
				WHERE e.idempotency_key = ? AND e.event = ? AND o.event_key = ? AND e.user_id = ?`,
				e.IdempotencyKey, e.Event, e.Event, e.UserID).Scan(&props, &source, &occurred, &payload, &meta))
			require.JSONEq(t, string(want), props)
			require.Equal(t, "bucket", source)
			require.True(t, occurred.Equal(now))
			require.JSONEq(t, `{"userId":"`+e.UserID+`","userEmail":"`+e.UserEmail+`","properties":`+string(want)+`}`, payload)
			require.JSONEq(t, `{"bucketId":"trial","userId":"`+e.UserID+`","transition":"`+batch.Transition+`","idempotencyKey":"`+e.IdempotencyKey+`"}`, meta)
		}
	}

	again, err := db.InsertEmissions(ctx, conn, db.Schema{}, batches[1], now.Add(time.Hour))
	require.NoError(t, err)
	require.Empty(t, again, "stored keys are not emitted twice")
	var pushes int
	require.NoError(t, conn.QueryRowContext(ctx, "SELECT count(*) FROM bucket_event_outbox").Scan(&pushes))
	require.Equal(t, 3, pushes)
}
