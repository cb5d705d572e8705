package tasks

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
)

// The outbox dispatcher's limits (contract §5.2).
const (
	// DispatchBatch is the most events one bulk push carries (Hatchet's cap).
	DispatchBatch = 1000
	// RetryBase and RetryCap bound the backoff of a failed push:
	// RetryBase·2^attempts, at most RetryCap.
	RetryBase = time.Second
	RetryCap  = 5 * time.Minute
)

// ErrNoHatchet is returned by Dispatch when no Hatchet server is configured.
var ErrNoHatchet = errors.New("no Hatchet server is configured")

// Dispatch pushes the pending outbox rows that are due to Hatchet, in id
// order and in bulk, until none is left, and returns how many it pushed.
// Each batch is claimed with FOR UPDATE SKIP LOCKED, so replicas share the
// work. A failed push is recorded on its rows, which back off and are
// retried later; Dispatch then returns the error.
func Dispatch(ctx context.Context, d *Deps) (int, error) {
	if d.Hatchet == nil {
		return 0, ErrNoHatchet
	}
	total := 0
	for {
		n, err := dispatchBatch(ctx, d)
		total += n
		if err != nil || n < DispatchBatch {
			return total, err
		}
	}
}

func dispatchBatch(ctx context.Context, d *Deps) (int, error) {
	var pushed int
	var pushErr error
	err := d.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := d.Now()
		rows, err := db.ClaimOutbox(ctx, tx, now, DispatchBatch)
		if err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
		}
		if pushErr = d.Hatchet.Push(ctx, rows); pushErr != nil {
			return db.MarkFailed(ctx, tx, ids, pushErr.Error(), now, RetryBase, RetryCap)
		}
		pushed = len(rows)
		return db.MarkDispatched(ctx, tx, ids, now)
	})
	if err != nil {
		return 0, err
	}
	return pushed, pushErr
}

// Dispatcher is the outbox dispatcher of a running worker: it dispatches
// every interval and whenever a task run wakes it, so that the pushes of
// many concurrent runs go out together in a few bulk calls.
type Dispatcher struct {
	d    *Deps
	wake chan struct{}
}

// NewDispatcher returns a dispatcher for d; start it with Run.
func NewDispatcher(d *Deps) *Dispatcher {
	return &Dispatcher{d: d, wake: make(chan struct{}, 1)}
}

// Wake asks for a dispatch now; it never blocks, and wakes that arrive
// during a dispatch coalesce into one more.
func (p *Dispatcher) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run dispatches until ctx ends. A failed round is logged; its rows wait
// out their backoff.
func (p *Dispatcher) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := Dispatch(ctx, p.d); err != nil && ctx.Err() == nil {
			p.d.Logger.WarnContext(ctx, "dispatching the outbox", slog.Int("pushed", n), slog.Any("error", err))
		} else if n > 0 {
			p.d.Logger.DebugContext(ctx, "outbox dispatched", slog.Int("pushed", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
	}
}

// flush dispatches what the task run enqueued, when a Hatchet server is
// configured, and returns how many it pushed and how many are left.
func flush(ctx context.Context, d *Deps) (dispatched, pending int) {
	if d.Hatchet != nil {
		var err error
		if dispatched, err = Dispatch(ctx, d); err != nil {
			d.Logger.WarnContext(ctx, "dispatching the outbox", slog.Any("error", err))
		}
	}
	if s, err := db.SummarizeOutbox(ctx, d.DB, 0); err == nil {
		pending = s.Pending
	}
	return dispatched, pending
}

// flushSoon ends a frequent task run (ingest, expiry): it wakes the running
// worker's dispatcher, which batches the pushes of concurrent runs, or
// dispatches inline where there is none (the commands).
func flushSoon(ctx context.Context, d *Deps) {
	switch {
	case d.Hatchet == nil:
		return // nothing to push to: the pushes wait in the outbox
	case d.Dispatcher != nil:
		d.Dispatcher.Wake()
	default:
		flush(ctx, d)
	}
}
