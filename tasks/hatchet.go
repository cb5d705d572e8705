package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	v0 "github.com/hatchet-dev/hatchet/pkg/client"
	"github.com/hatchet-dev/hatchet/pkg/client/rest"
	"github.com/hatchet-dev/hatchet/pkg/client/types"
	"github.com/hatchet-dev/hatchet/pkg/worker"
	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/hatchet-dev/hatchet/sdks/go/features"
	"github.com/rs/zerolog"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// Task names and their Hatchet settings.
const (
	TaskReconcile = "bucket-reconcile"
	// TaskReconcileBucket is the sweep of one bucket, a child run of
	// bucket-reconcile (contract §17).
	TaskReconcileBucket = "bucket-reconcile-bucket"
	TaskIngest          = "bucket-ingest"
	TaskExpiry          = "bucket-expiry"
	TaskBackfill        = "bucket-backfill"
	// ReconcileConcurrency is the concurrency expression of the sweep: one
	// group, one run at a time, the next queued (GROUP_ROUND_ROBIN).
	ReconcileConcurrency = "'bucket-reconcile'"
	// ReconcileBucketConcurrency groups the sweeps of one bucket: one at a
	// time, the next queued, so two sweeps never work one bucket at once.
	ReconcileBucketConcurrency = "input.bucketId"
)

// WorkerOptions are the registration settings of the worker's tasks.
type WorkerOptions struct {
	Name             string
	ReconcileCron    string
	ReconcileTimeout time.Duration
	BackfillTimeout  time.Duration
	// IngestMode is IngestStore, IngestEvaluate or IngestOff (not registered).
	IngestMode IngestMode
	// IngestEvents are the event keys that trigger bucket-ingest, as
	// IngestEventKeys resolves them.
	IngestEvents []string
	// BatchEvent is the key of a batch of events (INGEST_BATCH_EVENT,
	// DefaultBatchEvent when empty), which bucket-ingest subscribes to as
	// well.
	BatchEvent string
	// SDKLogger receives the SDK's own logs.
	SDKLogger *zerolog.Logger
}

// NewWorker creates the Hatchet worker with every task of the worker
// registered on it. Each task converts its input, calls one engine
// function and returns its output.
func NewWorker(client *hatchet.Client, d *Deps, opts WorkerOptions) (*hatchet.Worker, error) {
	reconcileBucket := client.NewStandaloneTask(TaskReconcileBucket,
		func(ctx hatchet.Context, raw any) (ReconcileOutput, error) {
			in, err := taskInput(raw, ParseReconcileBucketInput)
			if err != nil {
				return taskResult(ReconcileOutput{}, err)
			}
			out, err := ReconcileBucket(ctx, d, in)
			for i := range out.Buckets {
				out.Buckets[i].Worker = opts.Name
			}
			return taskResult(out, err)
		},
		hatchet.WithWorkflowDescription("Sweeps one bucket: a child run of bucket-reconcile, on whichever worker has a slot, "+
			"or triggered by name. Input {bucketId, dryRun?}."),
		hatchet.WithWorkflowConcurrency(types.Concurrency{
			Expression:    ReconcileBucketConcurrency,
			MaxRuns:       ptr(int32(1)),
			LimitStrategy: ptr(types.GroupRoundRobin),
		}),
		hatchet.WithRetries(1),
		hatchet.WithExecutionTimeout(opts.ReconcileTimeout),
	)
	// The sweep waits for each level of the dependency graph in turn.
	levels, err := SweepLevels(d.Buckets, nil)
	if err != nil {
		return nil, err
	}
	reconcile := client.NewStandaloneTask(TaskReconcile,
		func(ctx hatchet.Context, raw any) (ReconcileOutput, error) {
			in, err := taskInput(raw, ParseReconcileInput)
			if err != nil {
				return taskResult(ReconcileOutput{}, err)
			}
			// Every bucket of a level is a child run at once: Hatchet's
			// slots and the per-bucket concurrency bound them.
			return taskResult(ReconcileBy(ctx, d, in, func(_ context.Context, b *buckets.Bucket, dryRun bool) (ReconcileOutput, error) {
				res, err := reconcileBucket.Run(ctx, ReconcileBucketInput{BucketID: b.ID, DryRun: dryRun})
				if err != nil {
					return ReconcileOutput{}, err
				}
				var out ReconcileOutput
				return out, res.Into(&out)
			}, d.Buckets.Len()))
		},
		hatchet.WithWorkflowDescription("Moves members in and out of time-based buckets when only the clock has changed: "+
			"window expiry, absence joins, maxDwell and deferred minDwell leaves. One bucket-reconcile-bucket child per "+
			"bucket, level by level of the dependency graph. Input {bucketIds?, dryRun?}."),
		hatchet.WithWorkflowCron(opts.ReconcileCron),
		hatchet.WithWorkflowConcurrency(types.Concurrency{
			Expression:    ReconcileConcurrency,
			MaxRuns:       ptr(int32(1)),
			LimitStrategy: ptr(types.GroupRoundRobin),
		}),
		hatchet.WithRetries(1),
		hatchet.WithExecutionTimeout(time.Duration(len(levels)+1)*opts.ReconcileTimeout),
	)
	backfill := client.NewStandaloneTask(TaskBackfill,
		func(ctx hatchet.Context, in BackfillInput) (BackfillOutput, error) {
			return taskResult(Backfill(ctx, d, in))
		},
		hatchet.WithWorkflowDescription("Materializes a new bucket's members without emitting joins, or brings an edited "+
			"bucket up to date (members who no longer match leave and emit). Enqueued at boot and by the sweep."),
		hatchet.WithRetries(0),
		hatchet.WithExecutionTimeout(opts.BackfillTimeout),
	)
	workflows := []hatchet.WorkflowBase{reconcile, reconcileBucket, backfill}

	if opts.BatchEvent == "" {
		opts.BatchEvent = DefaultBatchEvent
	}
	if opts.IngestMode != IngestOff && len(opts.IngestEvents) > 0 {
		workflows = append(workflows, client.NewStandaloneTask(TaskIngest,
			// The output is an IngestOutput, or a BatchOutput for a batch.
			func(ctx hatchet.Context, in any) (any, error) {
				payload, err := json.Marshal(in)
				if err != nil {
					return taskResult[any](IngestOutput{}, fmt.Errorf("%w: %v", ErrInvalidInput, err))
				}
				event := deref(ctx.TriggeringEventKey())
				if event == opts.BatchEvent {
					return taskResult[any](HandleBatch(ctx, d, opts.IngestMode, payload, ctx.WorkflowRunId()))
				}
				return taskResult[any](HandleIngest(ctx, d, opts.IngestMode, event, payload, ctx.WorkflowRunId()))
			},
			hatchet.WithWorkflowDescription("Real-time membership: stores the pushed event ("+string(opts.IngestMode)+" mode), "+
				"or each event of a batch ("+opts.BatchEvent+"), evaluates the buckets it can change and emits their "+
				"joins and leaves."),
			hatchet.WithWorkflowEvents(append(slices.Clone(opts.IngestEvents), opts.BatchEvent)...),
			// Real time: ahead of the worker's other runs (and the arms of
			// expiry timers) when Hatchet is busy.
			hatchet.WithWorkflowDefaultPriority(features.RunPriorityHigh),
			// A transient failure (a lost connection) is retried: the run's
			// key-less event is stored as hatchet-run:<run id>, so a retry
			// never counts it twice. Invalid payloads are not retried.
			hatchet.WithRetries(3),
			hatchet.WithRetryBackoff(2, 30),
		))
	}

	if armsExpiry(d) {
		// A durable task, as the design has it, listening on
		// bucket:arm-expiry. Its body arms the timer row and returns: it
		// holds its durable slot for milliseconds, never for a window
		// (docs/expiry.md says why the timer is a row).
		workflows = append(workflows, client.NewStandaloneDurableTask(TaskExpiry,
			func(ctx hatchet.DurableContext, in any) (ExpiryResult, error) {
				armed, err := taskInput(in, ParseArmExpiry)
				if err != nil {
					return taskResult(ExpiryResult{}, err)
				}
				return taskResult(HandleArm(ctx, d, armed))
			},
			hatchet.WithWorkflowDescription("Arms the expiry timer of one fastExpiry member (bucket:arm-expiry). "+
				"The running workers fire it at its deadline and leave the member unless the criteria hold again "+
				"or the membership was re-armed."),
			hatchet.WithWorkflowEvents(ArmExpiryEvent),
			hatchet.WithWorkflowDefaultPriority(features.RunPriorityLow),
			hatchet.WithRetries(0),
		))
	}

	w, err := client.NewWorker(opts.Name, hatchet.WithWorkflows(workflows...), hatchet.WithLogger(opts.SDKLogger))
	if err != nil {
		return nil, fmt.Errorf("creating the Hatchet worker: %w", err)
	}
	return w, nil
}

// EnqueueThrough returns the Deps.EnqueueBackfill of a running worker: a
// bucket-backfill run started without waiting.
func EnqueueThrough(client *hatchet.Client) func(ctx context.Context, in BackfillInput) error {
	return func(ctx context.Context, in BackfillInput) error {
		_, err := client.RunNoWait(ctx, TaskBackfill, in)
		return err
	}
}

// armsExpiry reports whether an enabled bucket has fastExpiry, which is
// when bucket-expiry is registered (contract §10).
func armsExpiry(d *Deps) bool {
	for _, b := range d.Buckets.All() {
		if b.FastExpiry {
			return true
		}
	}
	return false
}

// IngestEventKeys resolves INGEST_EVENTS: "auto" is every event the
// enabled buckets reference plus contact:updated, "*" every event, and
// any other entry that event key; without repeats, in order.
func IngestEventKeys(entries []string, reg *buckets.Registry) []string {
	var keys []string
	add := func(k string) {
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	for _, e := range entries {
		if e == "auto" {
			for _, name := range reg.EventNames() {
				add(name)
			}
			add(ContactUpdated)
			continue
		}
		add(e)
	}
	return keys
}

// taskInput parses a run's input, which the SDK hands over decoded, by
// encoding it again for the strict parser; an input that does not encode
// is an ErrInvalidInput error too.
func taskInput[T any](raw any, parse func([]byte) (T, error)) (T, error) {
	payload, err := json.Marshal(raw)
	if err != nil {
		var zero T
		return zero, fmt.Errorf("%w: %v", ErrInvalidInput, err)
	}
	return parse(payload)
}

// taskResult makes an invalid-input error non-retryable.
func taskResult[T any](out T, err error) (T, error) {
	if errors.Is(err, ErrInvalidInput) {
		err = worker.NewNonRetryableError(err)
	}
	return out, err
}

// NewHatchet adapts the SDK client to what the engine asks of Hatchet.
func NewHatchet(client *hatchet.Client) Hatchet { return sdkHatchet{client} }

type sdkHatchet struct{ client *hatchet.Client }

// Push sends the outbox rows in one bulk push.
func (h sdkHatchet) Push(ctx context.Context, events []db.OutboxEvent) error {
	batch := make([]v0.EventWithAdditionalMetadata, len(events))
	for i, e := range events {
		var meta map[string]string
		if len(e.AdditionalMetadata) > 0 {
			if err := json.Unmarshal(e.AdditionalMetadata, &meta); err != nil {
				return fmt.Errorf("decoding the metadata of outbox row %d: %w", e.ID, err)
			}
		}
		batch[i] = v0.EventWithAdditionalMetadata{Key: e.EventKey, Event: e.Payload, AdditionalMetadata: meta}
		if e.EventKey == ArmExpiryEvent {
			// Its run only confirms a timer that is a row already: every
			// other run goes first.
			batch[i].Priority = ptr(int32(features.RunPriorityLow))
		}
	}
	if err := h.client.Events().BulkPush(ctx, batch); err != nil {
		return fmt.Errorf("pushing %d events to Hatchet: %w", len(events), err)
	}
	return nil
}

// CancelRuns cancels workflow runs by id; ids that are not UUIDs are skipped.
func (h sdkHatchet) CancelRuns(ctx context.Context, runIDs []string) error {
	var ids []uuid.UUID
	for _, id := range runIDs {
		if u, err := uuid.Parse(id); err == nil {
			ids = append(ids, u)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := h.client.Runs().Cancel(ctx, rest.V1CancelTaskRequest{ExternalIds: &ids}); err != nil {
		return fmt.Errorf("cancelling %d runs: %w", len(ids), err)
	}
	return nil
}
