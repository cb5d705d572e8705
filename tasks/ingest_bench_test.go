package tasks

import (
	"fmt"
	"testing"
)

// BenchmarkIngestInProcess is the database side of one bucket-ingest run
// in store mode that makes a new user join (no Hatchet): contact upsert,
// event, evaluation, membership, transition event and outbox row.
func BenchmarkIngestInProcess(b *testing.B) {
	e := newEnv(b, defs{"buckets/recent.yaml": recentlyActive})
	e.deps.Hatchet = nil
	i := 0
	for b.Loop() {
		i++
		if _, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", []byte(fmt.Sprintf(`{"userId":"u%d"}`, i)), ""); err != nil {
			b.Fatal(err)
		}
	}
}
