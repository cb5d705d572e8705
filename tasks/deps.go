// Package tasks is the engine: evaluating a user, the transition funnel,
// the reconcile sweep, ingest, expiry, backfill and the outbox dispatcher,
// as plain context-first functions over Deps, plus the small file that
// declares them as Hatchet tasks.
package tasks

import (
	"log/slog"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/journeys"
)

// Deps is everything a task needs, built once in main and shared.
type Deps struct {
	DB       *bun.DB
	Buckets  *buckets.Registry
	Journeys *journeys.Registry
	Logger   *slog.Logger
	// Now is the one clock: every business timestamp comes from it, and
	// reaches SQL as a parameter.
	Now func() time.Time
}
