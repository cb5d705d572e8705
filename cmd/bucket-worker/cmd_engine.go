package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/tasks"
)

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// runReconcile runs one sweep in-process and prints its output. Its pushes
// are dispatched when Hatchet is configured, and left pending otherwise.
func runReconcile(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("reconcile")
	var bucketIDs stringList
	fs.Var(&bucketIDs, "bucket", "sweep only this bucket (repeatable)")
	dryRun := fs.Bool("dry-run", false, "report what would change, change nothing")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	e, closeEngine, err := openEngine(ctx, env, offline)
	if err != nil {
		return err
	}
	defer closeEngine()
	out, err := tasks.Reconcile(ctx, e.deps, tasks.ReconcileInput{BucketIDs: bucketIDs, DryRun: *dryRun})
	if err != nil {
		return usageIfInvalid(err)
	}
	if *asJSON {
		if err := writeJSON(env.stdout, out); err != nil {
			return err
		}
	} else if err := printSweep(env, out, *dryRun); err != nil {
		return err
	}
	if failed := failedBuckets(out); failed != "" {
		return fmt.Errorf("reconciling %s failed (see its error in the output)", failed)
	}
	return nil
}

func printSweep(env *environment, out tasks.ReconcileOutput, dryRun bool) error {
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	if dryRun {
		fmt.Fprintln(tw, "BUCKET\tWOULD-LEAVE\tWOULD-JOIN\tMS\tNOTE\tSAMPLE")
		for _, b := range out.Buckets {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", b.BucketID, deref(b.WouldLeave), deref(b.WouldJoin),
				b.DurationMs, sweepNote(b), strings.Join(b.SampleUserIDs, ","))
		}
	} else {
		fmt.Fprintln(tw, "BUCKET\tLEFT\tTTL-LEFT\tDEFERRED-LEFT\tJOINED\tEVALUATED\tMS\tNOTE")
		for _, b := range out.Buckets {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", b.BucketID, b.Left, b.TTLLeft, b.DeferredLeft,
				b.Joined, b.Evaluated, b.DurationMs, sweepNote(b))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !dryRun {
		fmt.Fprintf(env.stdout, "left %d, joined %d; pushed %d, %d pending in the outbox\n",
			out.Reconciled, out.Joined, out.Dispatched, out.Pending)
	}
	return nil
}

// usageIfInvalid makes an engine's invalid-input error a usage error: on
// the command line, the input is the command line.
func usageIfInvalid(err error) error {
	if errors.Is(err, tasks.ErrInvalidInput) {
		return usageError{err.Error()}
	}
	return err
}

// sweepNote is the one-line remark on a bucket's sweep: why it was
// skipped, why its joins were, or its error.
func sweepNote(b tasks.BucketSweep) string {
	var notes []string
	if b.Skipped != "" {
		notes = append(notes, "skipped: "+b.Skipped)
	}
	if b.JoinsSkipped != "" {
		notes = append(notes, "joins skipped: "+b.JoinsSkipped)
	}
	if b.Deferred > 0 {
		notes = append(notes, fmt.Sprintf("%d leaves deferred by minDwell", b.Deferred))
	}
	if b.BudgetSpent {
		notes = append(notes, "time budget spent, the next sweep carries on")
	}
	if b.Error != "" {
		notes = append(notes, "error: "+b.Error)
	}
	return strings.Join(notes, "; ")
}

func failedBuckets(out tasks.ReconcileOutput) string {
	var ids []string
	for _, b := range out.Buckets {
		if b.Error != "" {
			ids = append(ids, b.BucketID)
		}
	}
	return strings.Join(ids, ", ")
}

type outboxOutput struct {
	Pending                 int             `json:"pending"`
	OldestPendingAgeSeconds float64         `json:"oldestPendingAgeSeconds"`
	LastErrors              []outboxFailure `json:"lastErrors"`
	Dispatched              *int            `json:"dispatched,omitempty"`
	// Destinations are the deliveries of each destination other than
	// Hatchet (contract §15); Delivered and Retried count what --flush
	// delivered and --retry-dead queued again.
	Destinations []db.DeliveryStats `json:"destinations"`
	Delivered    *int               `json:"delivered,omitempty"`
	Retried      *int               `json:"retried,omitempty"`
}

type outboxFailure struct {
	ID       int64  `json:"id"`
	EventKey string `json:"eventKey"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

// runOutbox reports the pushes waiting in the outbox and the deliveries
// waiting for each destination; --retry-dead queues the dead deliveries
// again and --flush dispatches and delivers what is due, both first.
func runOutbox(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("outbox")
	flush := fs.Bool("flush", false, "dispatch the pending pushes and deliveries now (needs Hatchet)")
	retryDead := fs.Bool("retry-dead", false, "queue the dead deliveries again")
	only := fs.String("destination", "", "with --retry-dead: only this destination's")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *only != "" && !*retryDead {
		return usageError{"--destination goes with --retry-dead"}
	}
	mode := offline
	if *flush {
		mode = needsHatchet
	}
	e, closeEngine, err := openEngine(ctx, env, mode)
	if err != nil {
		return err
	}
	defer closeEngine()
	var out outboxOutput
	if *retryDead {
		n, err := db.RetryDeadDeliveries(ctx, e.deps.DB, *only, e.deps.Now())
		if err != nil {
			return err
		}
		out.Retried = &n
	}
	var flushErr error
	if *flush {
		n, err := e.deps.Dispatcher.Dispatch(ctx, tasks.CommandPushTimeout)
		out.Dispatched, flushErr = &n, err
		delivered := 0
		for _, p := range e.deps.Deliverers {
			delivered += p.Flush(ctx)
		}
		out.Delivered = &delivered
	}
	stats, err := db.DeliveryStatsByDestination(ctx, e.deps.DB)
	if err != nil {
		return err
	}
	out.Destinations = []db.DeliveryStats{}
	for _, id := range slices.Sorted(maps.Keys(stats)) {
		out.Destinations = append(out.Destinations, stats[id])
	}
	summary, err := db.SummarizeOutbox(ctx, e.deps.DB, 10)
	if err != nil {
		return err
	}
	out.Pending = summary.Pending
	if summary.OldestPending != nil {
		out.OldestPendingAgeSeconds = time.Since(*summary.OldestPending).Seconds()
	}
	out.LastErrors = []outboxFailure{}
	for _, r := range summary.LastErrors {
		out.LastErrors = append(out.LastErrors, outboxFailure{ID: r.ID, EventKey: r.EventKey, Attempts: r.Attempts, Error: deref(r.LastError)})
	}
	if *asJSON {
		if err := writeJSON(env.stdout, out); err != nil {
			return err
		}
	} else {
		if out.Retried != nil {
			fmt.Fprintf(env.stdout, "queued %d dead deliveries again\n", *out.Retried)
		}
		if out.Dispatched != nil {
			fmt.Fprintf(env.stdout, "dispatched %d, delivered %d\n", *out.Dispatched, *out.Delivered)
		}
		fmt.Fprintf(env.stdout, "pending %d", out.Pending)
		if out.Pending > 0 {
			fmt.Fprintf(env.stdout, ", oldest %s old", time.Duration(out.OldestPendingAgeSeconds*float64(time.Second)).Round(time.Second))
		}
		fmt.Fprintln(env.stdout)
		for _, f := range out.LastErrors {
			fmt.Fprintf(env.stdout, "  #%d %s: %d attempt(s): %s\n", f.ID, f.EventKey, f.Attempts, f.Error)
		}
		for _, d := range out.Destinations {
			fmt.Fprintf(env.stdout, "destination %s: pending %d, dead %d", d.Destination, d.Pending, d.Dead)
			if d.LastError != nil {
				fmt.Fprintf(env.stdout, ", last error: %s", *d.LastError)
			}
			fmt.Fprintln(env.stdout)
		}
	}
	if flushErr != nil {
		return fmt.Errorf("dispatching: %w", flushErr)
	}
	return nil
}

// runSwitch returns the command that sets a bucket's runtime switch.
func runSwitch(enabled bool) func(ctx context.Context, env *environment, args []string) error {
	return func(ctx context.Context, env *environment, args []string) error {
		name := map[bool]string{true: "enable", false: "disable"}[enabled]
		fs := env.newFlagSet(name)
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err.Error()}
		}
		if fs.NArg() != 1 {
			return usageError{"give exactly one bucket id"}
		}
		id := fs.Arg(0)
		e, closeEngine, err := openEngine(ctx, env, offline)
		if err != nil {
			return err
		}
		defer closeEngine()
		known := false
		for _, b := range e.defs.buckets {
			known = known || b.ID == id
		}
		if !known {
			return usageError{fmt.Sprintf("no bucket %q in %s", id, e.cfg.DefinitionsDir)}
		}
		if err := e.deps.Switch.Set(ctx, id, enabled, e.deps.Now()); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "bucket %s %sd at runtime\n", id, name)
		return nil
	}
}

// runBackfill runs one backfill in-process, recording its job. It never
// enqueues anything.
func runBackfill(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("backfill")
	bucketID := fs.String("bucket", "", "bucket id (required)")
	mode := fs.String("mode", "auto", "auto (the criteria-hash diff decides), first-time or reeval")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *bucketID == "":
		return usageError{"--bucket is required"}
	case *mode != "auto" && *mode != string(tasks.ModeFirstTime) && *mode != string(tasks.ModeReeval):
		return usageError{fmt.Sprintf("--mode %q: use auto, first-time or reeval", *mode)}
	}
	e, closeEngine, err := openEngine(ctx, env, offline)
	if err != nil {
		return err
	}
	defer closeEngine()
	b, ok := e.deps.Buckets.Get(*bucketID)
	if !ok {
		return usageError{fmt.Sprintf("no enabled bucket %q", *bucketID)}
	}
	in := tasks.BackfillInput{BucketID: b.ID, Mode: tasks.BackfillMode(*mode)}
	if *mode == "auto" {
		configs, err := db.BucketConfigs(ctx, e.deps.DB)
		if err != nil {
			return err
		}
		in.Mode = tasks.NeededBackfill(b, configs)
	}
	out := tasks.BackfillOutput{BucketID: b.ID, Mode: "none", Status: tasks.StatusUpToDate}
	var failed error
	if in.Mode != "" {
		if in, err = tasks.RecordBackfill(ctx, e.deps, b.ID, in.Mode); err != nil {
			return err
		}
		// A failed backfill still prints what it did, then exits 1.
		out, failed = tasks.Backfill(ctx, e.deps, in)
	}
	if *asJSON {
		if err := writeJSON(env.stdout, out); err != nil {
			return err
		}
		return failed
	}
	fmt.Fprintf(env.stdout, "bucket %s: %s (%s)", out.BucketID, out.Status, out.Mode)
	if out.Reason != "" {
		fmt.Fprintf(env.stdout, ": %s", out.Reason)
	}
	fmt.Fprintf(env.stdout, "; joined %d silently, left %d\n", out.Joined, out.Left)
	return failed
}
