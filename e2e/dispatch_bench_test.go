//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	v0 "github.com/hatchet-dev/hatchet/pkg/client"

	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/tasks"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// BenchmarkDispatch measures the outbox dispatcher pushing 20 000
// transition events to the real Hatchet server — claim 1 000 rows, one
// bulk push, mark them dispatched, commit — next to raw BulkPush calls of
// the same events in the same batches, interleaved. Run it with
//
//	BUCKET_BENCH=1 go test -tags e2e ./e2e -run '^$' -bench Dispatch -benchtime 4x -timeout 30m
func BenchmarkDispatch(b *testing.B) {
	const n = 20_000
	conn, _, client := benchSetup(b, "dispatch")
	ctx := context.Background()
	now := time.Now()
	dispatcher := tasks.NewDispatcher(conn, tasks.NewHatchet(client), slog.New(slog.DiscardHandler), func() time.Time { return now })
	exec := func(query string, args ...any) {
		if _, err := conn.NewRaw(query, args...).Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	// The outbox rows of n leaves, as the funnel writes them.
	exec(`INSERT INTO bucket_event_outbox (event_key, payload, additional_metadata, idempotency_key, created_at, available_at)
		SELECT 'bench.dispatch', jsonb_build_object('userId', 'u' || i, 'userEmail', '', 'properties', jsonb_build_object(
				'bucketId', 'bench', 'bucketName', 'Bench', 'userId', 'u' || i, 'transition', 'left',
				'source', 'reconcile', 'entryCount', 1, 'reason', 'criteria')),
			jsonb_build_object('bucketId', 'bench', 'userId', 'u' || i, 'transition', 'left', 'idempotencyKey', 'bucket:bench:u' || i || ':left:1'),
			'bucket:bench:u' || i || ':left:1', ?0, ?0
		FROM generate_series(1, ?1) i`, now, n)
	// The same events for the raw pushes, read once.
	rows, err := dbtest.ListOutbox(ctx, conn)
	if err != nil || len(rows) != n {
		b.Fatalf("%d outbox rows, %v", len(rows), err)
	}
	events := make([]v0.EventWithAdditionalMetadata, n)
	for i, r := range rows {
		var meta map[string]string
		if err := json.Unmarshal(r.AdditionalMetadata, &meta); err != nil {
			b.Fatal(err)
		}
		events[i] = v0.EventWithAdditionalMetadata{Key: r.EventKey, Event: r.Payload, AdditionalMetadata: meta}
	}

	// Hatchet keeps processing a burst after accepting it; the two sides
	// take turns going first, so that neither always follows the other.
	var dispatch, raw time.Duration
	runDispatch := func() {
		b.StopTimer()
		exec("UPDATE bucket_event_outbox SET dispatched_at = NULL")
		exec("VACUUM ANALYZE bucket_event_outbox")
		b.StartTimer()
		start := time.Now()
		pushed, err := dispatcher.Dispatch(ctx, tasks.WorkerPushTimeout)
		if err != nil || pushed != n {
			b.Fatalf("dispatched %d of %d: %v", pushed, n, err)
		}
		dispatch += time.Since(start)
	}
	runRaw := func() {
		start := time.Now()
		for batch := range slices.Chunk(events, tasks.DispatchBatch) {
			if err := client.Events().BulkPush(ctx, batch); err != nil {
				b.Fatal(err)
			}
		}
		raw += time.Since(start)
	}
	for i := 0; b.Loop(); i++ {
		for _, raw := range benchreport.Turns(i) {
			if raw {
				runRaw()
			} else {
				runDispatch()
			}
		}
	}
	benchreport.Rate(b, "events/s", float64(n*b.N), dispatch, raw)
}
