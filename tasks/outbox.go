package tasks

import (
	"context"
	"log/slog"
	"sync/atomic"
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
	// CommandPushTimeout bounds a bulk push of a command: an unreachable
	// Hatchet fails it after this long and its rows stay pending (contract
	// §11).
	CommandPushTimeout = 5 * time.Second
	// WorkerPushTimeout bounds a bulk push of a running worker's
	// dispatcher: a busy Hatchet may take several seconds for 1 000 events,
	// and a push cut short is pushed again.
	WorkerPushTimeout = time.Minute
)

// Dispatcher sends the outbox to Hatchet (contract §5.2). After every
// commit of transitions (Deps.afterCommit) it is told there is work: in a
// running worker (Run) it then dispatches in the background, so that the
// pushes of many concurrent task runs go out together in a few bulk calls;
// in a command it dispatches inline, and once Hatchet did not take a push
// it stops trying: the rest stays pending in the outbox for the next
// `outbox --flush` or running worker, and the command says so instead of
// waiting for Hatchet (contract §11).
type Dispatcher struct {
	db      *bun.DB
	hatchet Hatchet
	logger  *slog.Logger
	now     func() time.Time

	wake       chan struct{}
	background atomic.Bool
	gaveUp     atomic.Bool
}

// NewDispatcher returns a dispatcher of the outbox in conn to h, stamping
// with the clock now; it dispatches inline until Run starts it in the
// background.
func NewDispatcher(conn *bun.DB, h Hatchet, logger *slog.Logger, now func() time.Time) *Dispatcher {
	return &Dispatcher{db: conn, hatchet: h, logger: logger, now: now, wake: make(chan struct{}, 1)}
}

// Dispatch pushes the pending outbox rows that are due to Hatchet, in id
// order and in bulk, each push bounded by timeout, until none is left, and
// returns how many it pushed. Each batch is claimed with FOR UPDATE SKIP
// LOCKED, so replicas share the work. A failed push is recorded on its
// rows, which back off and are retried later; Dispatch then returns the
// error.
func (p *Dispatcher) Dispatch(ctx context.Context, timeout time.Duration) (int, error) {
	total := 0
	for {
		n, err := p.dispatchBatch(ctx, timeout)
		total += n
		if err != nil || n < DispatchBatch {
			return total, err
		}
	}
}

func (p *Dispatcher) dispatchBatch(ctx context.Context, timeout time.Duration) (int, error) {
	var pushed int
	var pushErr error
	err := p.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		now := p.now()
		rows, err := db.ClaimOutbox(ctx, tx, now, DispatchBatch)
		if err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
		}
		pushCtx, cancel := context.WithTimeout(ctx, timeout)
		pushErr = p.hatchet.Push(pushCtx, rows)
		cancel()
		if pushErr != nil {
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

// Wake asks the background dispatcher for a dispatch now; it never blocks,
// and wakes that arrive during a dispatch coalesce into one more.
func (p *Dispatcher) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run dispatches in the background until ctx ends: every interval, and
// whenever woken. A failed round is logged; its rows wait out their backoff.
func (p *Dispatcher) Run(ctx context.Context, interval time.Duration) {
	p.background.Store(true)
	defer p.background.Store(false)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := p.Dispatch(ctx, WorkerPushTimeout); err != nil && ctx.Err() == nil {
			p.logger.WarnContext(ctx, "dispatching the outbox", slog.Int("pushed", n), slog.Any("error", err))
		} else if n > 0 {
			p.logger.DebugContext(ctx, "outbox dispatched", slog.Int("pushed", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
	}
}

// notify is called after a transaction enqueued pushes: it wakes the
// background dispatcher, or dispatches inline, and returns how many pushes
// it sent itself.
func (p *Dispatcher) notify(ctx context.Context) int {
	if p.background.Load() {
		p.Wake()
		return 0
	}
	return p.flush(ctx)
}

// flush dispatches inline what is due, unless Hatchet already failed to
// take a push in this process, and returns how many it pushed.
func (p *Dispatcher) flush(ctx context.Context) int {
	if p.gaveUp.Load() {
		return 0
	}
	n, err := p.Dispatch(ctx, CommandPushTimeout)
	if err != nil && ctx.Err() == nil && !p.gaveUp.Swap(true) {
		p.logger.WarnContext(ctx, "Hatchet did not take the pushes: they stay pending in the outbox "+
			"(bucket-worker outbox --flush, or a running worker, sends them)", slog.Any("error", err))
	}
	return n
}

// flush dispatches what is still due when a Hatchet server is configured,
// and returns how many it pushed and how many pushes are left pending.
func flush(ctx context.Context, d *Deps) (dispatched, pending int) {
	if d.Dispatcher != nil {
		dispatched = d.Dispatcher.flush(ctx)
	}
	if s, err := db.SummarizeOutbox(ctx, d.DB, 0); err == nil {
		pending = s.Pending
	}
	return dispatched, pending
}
