package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
)

// The outbox dispatcher's limits (contract §5.2).
const (
	// DispatchBatch is the most events one bulk push carries (Hatchet's cap).
	DispatchBatch = 1000
	// minPushSize is the fewest events a push is cut down to.
	minPushSize = 10
	// RetryBase and RetryCap bound the backoff of a failed push:
	// RetryBase·2^attempts, at most RetryCap.
	RetryBase = time.Second
	RetryCap  = 5 * time.Minute
	// CommandPushTimeout bounds a bulk push of a command: an unreachable
	// Hatchet fails it after this long and its rows stay pending (contract
	// §11).
	CommandPushTimeout = 5 * time.Second
	// WorkerPushTimeout bounds a bulk push of a running worker's
	// dispatcher: a busy Hatchet may take several seconds for 1 000 events.
	// It stays below the 30 s after which the Hatchet SDK gives up on one
	// attempt of a call and tries it again: a push that outlives an attempt
	// is taken by Hatchet twice before the dispatcher hears of it.
	WorkerPushTimeout = 25 * time.Second
	// leaseMargin is how much longer than two push timeouts (its own and
	// the one before it, see Dispatch) a dispatcher holds the rows it
	// pushes.
	leaseMargin = 30 * time.Second
)

// Dispatcher sends the outbox to Hatchet (contract §5.2). After every
// commit of transitions (Deps.afterCommit) it is told there is work: in a
// running worker (Run) it then dispatches in the background, so that the
// pushes of many concurrent task runs go out together in a few bulk calls;
// in a command it dispatches inline, and once Hatchet did not take a push
// it stops trying: the rest stays pending in the outbox for the next
// `outbox --flush` or running worker, and the command says so instead of
// waiting for Hatchet (contract §11).
//
// A push is sized to what Hatchet takes well within the push timeout: the
// dispatcher measures each push and sizes the next to a quarter of the
// timeout at that pace, and cuts the size by four when a push times out.
// A push that timed out may still have been taken — Hatchet goes on with
// a bulk push its client gave up on — so its rows are pushed again, each
// after its own backoff, and rows not tried yet go first (db.ClaimOutbox).
type Dispatcher struct {
	db      *bun.DB
	hatchet Hatchet
	logger  *slog.Logger
	now     func() time.Time

	wake       chan struct{}
	background atomic.Bool
	gaveUp     atomic.Bool
	// sizes is the next push size of each push timeout.
	mu    sync.Mutex
	sizes map[time.Duration]int
}

// NewDispatcher returns a dispatcher of the outbox in conn to h, stamping
// with the clock now; it dispatches inline until Run starts it in the
// background.
func NewDispatcher(conn *bun.DB, h Hatchet, logger *slog.Logger, now func() time.Time) *Dispatcher {
	return &Dispatcher{db: conn, hatchet: h, logger: logger, now: now, wake: make(chan struct{}, 1), sizes: map[time.Duration]int{}}
}

// errPushTimedOut marks a push Hatchet did not answer within its timeout:
// it may have taken the events all the same.
var errPushTimedOut = errors.New("Hatchet did not answer the push in time; it may have taken the events, which are pushed again")

// Dispatch pushes the pending outbox rows that are due to Hatchet, in
// bulk, each push bounded by timeout, until none is left, and returns how
// many it pushed. Replicas share the work: each push's rows are leased to
// it (db.ClaimOutbox). A failed push is recorded on its rows, which back
// off and are retried later, and Dispatch returns the error: a command
// then gives up for this run, a running worker dispatches again at once
// when the push timed out (Run) — smaller.
//
// The database's turn overlaps Hatchet's, as the deliverer's does: while
// a push is on the wire, the next batch is claimed and the one before is
// marked. One push is in flight at a time, so the pushes still go out in
// the order they were claimed. After a failed push the batch claimed
// early is released, due again at once.
func (p *Dispatcher) Dispatch(ctx context.Context, timeout time.Duration) (int, error) {
	// A batch claimed early waits for the push before it: its lease
	// covers both.
	lease := 2*timeout + leaseMargin
	claim := func() claimed {
		size := p.pushSize(timeout)
		rows, err := db.ClaimOutbox(ctx, p.db, p.now(), lease, size)
		return claimed{rows, size, err}
	}
	var marking chan error // the previous push's rows, being marked
	marked := func() error {
		if marking == nil {
			return nil
		}
		defer func() { marking = nil }()
		return <-marking
	}
	total := 0
	batch := claim()
	err := batch.err
	for err == nil && len(batch.rows) > 0 {
		early := make(chan claimed, 1)
		if len(batch.rows) < batch.size {
			early <- claimed{} // nothing else was due
		} else {
			go func() { early <- claim() }()
		}
		pushErr := p.push(ctx, timeout, batch)
		if pushErr == nil {
			total += len(batch.rows)
		}
		markErr := marked()
		marking = make(chan error, 1)
		go func(done chan<- error, rows []db.OutboxEvent) { done <- p.mark(ctx, rows, pushErr) }(marking, batch.rows)
		next := <-early
		if err = errors.Join(markErr, pushErr, next.err); err != nil {
			p.release(ctx, next.rows)
			break
		}
		batch = next
	}
	return total, errors.Join(err, marked())
}

// claimed is a batch of leased rows, the push size it was claimed at, and
// the claim's error.
type claimed struct {
	rows []db.OutboxEvent
	size int
	err  error
}

// pushSize is the size of the next push with this timeout: at first as
// many as Hatchet takes in a quarter of it at 200 events a second.
func (p *Dispatcher) pushSize(timeout time.Duration) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if size, ok := p.sizes[timeout]; ok {
		return size
	}
	return clampPush(int(timeout.Seconds() / 4 * 200))
}

// measured sizes the next push from the last: n events in took, or a
// timeout.
func (p *Dispatcher) measured(timeout time.Duration, size, n int, took time.Duration, timedOut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case timedOut:
		p.sizes[timeout] = clampPush(size / 4)
	case n > 0:
		rate := float64(n) / max(took.Seconds(), 0.001)
		p.sizes[timeout] = clampPush(min(2*size, int(rate*timeout.Seconds()/4)))
	}
}

func clampPush(size int) int { return min(max(size, minPushSize), DispatchBatch) }

// push sends a claimed batch within timeout and sizes the next push from
// it; it returns errPushTimedOut, wrapped, when Hatchet did not answer in
// time.
func (p *Dispatcher) push(ctx context.Context, timeout time.Duration, batch claimed) error {
	pushCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	err := p.hatchet.Push(pushCtx, batch.rows)
	took := time.Since(start)
	timedOut := err != nil && pushCtx.Err() == context.DeadlineExceeded && ctx.Err() == nil
	p.measured(timeout, batch.size, len(batch.rows), took, timedOut)
	switch {
	case timedOut:
		return fmt.Errorf("%w (%d events, %s)", errPushTimedOut, len(batch.rows), timeout)
	case err == nil:
		p.logger.DebugContext(ctx, "pushed to Hatchet", slog.Int("events", len(batch.rows)), slog.Duration("took", took))
	}
	return err
}

// mark records the outcome of a push on its rows, even when ctx ended:
// the push is done. A failed push's rows back off.
func (p *Dispatcher) mark(ctx context.Context, rows []db.OutboxEvent, pushErr error) error {
	ctx, now, ids := context.WithoutCancel(ctx), p.now(), outboxIDs(rows)
	if pushErr != nil {
		return db.MarkFailed(ctx, p.db, ids, pushErr.Error(), now, RetryBase, RetryCap)
	}
	return db.MarkDispatched(ctx, p.db, ids, now)
}

// release gives claimed rows back unpushed; a failure only leaves them
// to their lease.
func (p *Dispatcher) release(ctx context.Context, rows []db.OutboxEvent) {
	if err := db.ReleaseOutbox(context.WithoutCancel(ctx), p.db, outboxIDs(rows)); err != nil {
		p.logger.WarnContext(ctx, "claimed pushes wait for their lease to lapse", slog.Int("events", len(rows)), slog.Any("error", err))
	}
}

// outboxIDs is the ids of claimed outbox rows.
func outboxIDs(rows []db.OutboxEvent) []int64 {
	return rowIDs(rows, func(r db.OutboxEvent) int64 { return r.ID })
}

// rowIDs is the ids of claimed rows, the outbox's or the deliveries'.
func rowIDs[R any](rows []R, id func(R) int64) []int64 {
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = id(r)
	}
	return ids
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
		n, err := p.Dispatch(ctx, WorkerPushTimeout)
		switch {
		case errors.Is(err, errPushTimedOut) && ctx.Err() == nil:
			// Hatchet answers, slowly: push again at once, smaller.
			p.logger.WarnContext(ctx, "a push to Hatchet timed out: its events are pushed again, and pushes are smaller",
				slog.Int("pushed", n), slog.Int("next_size", p.pushSize(WorkerPushTimeout)), slog.Any("error", err))
			continue
		case err != nil && ctx.Err() == nil:
			p.logger.WarnContext(ctx, "dispatching the outbox", slog.Int("pushed", n), slog.Any("error", err))
		case n > 0:
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

// flushed is what a command's last flush sent and left.
type flushed struct {
	dispatched, pending    int // pushes to Hatchet
	delivered, undelivered int // deliveries to the other destinations
}

// flush sends what is still due before a command ends: the pushes when a
// Hatchet server is configured, and each destination's deliveries (contract
// §15), once; it says what it sent and what is left.
func flush(ctx context.Context, d *Deps) flushed {
	var f flushed
	if d.Dispatcher != nil {
		f.dispatched = d.Dispatcher.flush(ctx)
	}
	for _, p := range d.Deliverers {
		f.delivered += p.Flush(ctx)
	}
	if s, err := db.SummarizeOutbox(ctx, d.DB, 0); err == nil {
		f.pending = s.Pending
	}
	if n, err := db.PendingDeliveries(ctx, d.DB); err == nil {
		f.undelivered = n
	}
	return f
}
