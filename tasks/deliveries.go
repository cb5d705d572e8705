package tasks

import (
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/buckets/destination"
	"github.com/bucketworker/bucket-worker/db"
)

// Destinations are where transitions go besides Hatchet (contract §15).
type Destinations struct {
	// Webhooks are the enabled outbound webhook destinations.
	Webhooks []*destination.Webhook
	// PostHog mirrors the membership of the buckets with syncToPostHog
	// into person properties; false without POSTHOG_API_KEY.
	PostHog bool
}

// delivered is one transition as its deliveries describe it.
type delivered struct {
	kind    TransitionKind
	source  Source
	reason  LeaveReason
	at      time.Time
	userID  string
	email   string
	epoch   int
	emitted bool // its bucket:entered or bucket:left was emitted
}

// deliveries are the deliveries of the transitions of the bucket to the
// destinations other than Hatchet: PostHog's person property for every
// join and leave of a bucket that syncs — a join the entry limit kept
// silent included, since the user is in the bucket — and each webhook's
// event for the transitions that emitted theirs. Dwell fires have none.
func (ds Destinations) deliveries(b *buckets.Bucket, moved []delivered) ([]db.Delivery, error) {
	var out []db.Delivery
	for _, m := range moved {
		key := fmt.Sprintf("bucket:%s:%s:%s:%d", b.ID, m.userID, m.kind, m.epoch)
		if ds.PostHog && b.SyncToPostHog {
			props := map[string]any{"$set": map[string]bool{b.PostHogPropertyKey: true}}
			if m.kind == Left {
				props = map[string]any{"$unset": []string{b.PostHogPropertyKey}}
			}
			payload, err := json.Marshal(props)
			if err != nil {
				return nil, err
			}
			out = append(out, db.Delivery{Destination: destination.PostHog, UserID: m.userID, BucketID: b.ID, IdempotencyKey: key, Payload: payload})
		}
		if !m.emitted {
			continue
		}
		event := map[TransitionKind]string{Entered: destination.EventEntered, Left: destination.EventLeft}[m.kind]
		for _, w := range ds.Webhooks {
			if !w.Wants(event, b.ID) {
				continue
			}
			body, err := webhookBody(w.ID, key, event, m.at, webhookData{
				BucketID: b.ID, BucketName: b.Name, UserID: m.userID, UserEmail: m.email, Transition: m.kind,
				EntryCount: m.epoch, Source: m.source, Reason: m.reason,
			})
			if err != nil {
				return nil, err
			}
			out = append(out, db.Delivery{Destination: w.ID, UserID: m.userID, BucketID: b.ID, IdempotencyKey: key, Payload: body})
		}
	}
	return out, nil
}

// deliver queues the deliveries of the transitions in the transaction
// (contract §15).
func (t *txn) deliver(ctx context.Context, b *buckets.Bucket, moved []delivered) error {
	rows, err := t.d.Destinations.deliveries(b, moved)
	if err != nil || len(rows) == 0 {
		return err
	}
	if err := db.InsertDeliveries(ctx, t.tx, rows, t.now); err != nil {
		return err
	}
	t.out.Deliveries += len(rows)
	return nil
}

// webhookData is the data of a webhook event of Hogsend's catalog.
type webhookData struct {
	BucketID   string         `json:"bucketId"`
	BucketName string         `json:"bucketName"`
	UserID     string         `json:"userId"`
	UserEmail  string         `json:"userEmail"`
	Transition TransitionKind `json:"transition"`
	EntryCount int            `json:"entryCount"`
	Source     Source         `json:"source"`
	Reason     LeaveReason    `json:"reason,omitempty"` // left only
}

// webhookBody is the body of a webhook event (contract §15.2): its id is
// derived from the destination and the transition's key, so that every
// retry carries the same one.
func webhookBody(destinationID, key, event string, at time.Time, data any) (json.RawMessage, error) {
	return json.Marshal(struct {
		ID        string `json:"id"`
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      any    `json:"data"`
	}{messageID(destinationID, key), event, at.UTC().Format(time.RFC3339Nano), data})
}

// messageID is "msg_" and a name-based UUID (version 5, SHA-1) of the
// destination and the key.
func messageID(destinationID, key string) string {
	sum := sha1.Sum([]byte("bucket-worker\x00" + destinationID + "\x00" + key))
	sum[6] = sum[6]&0x0f | 0x50
	sum[8] = sum[8]&0x3f | 0x80
	return fmt.Sprintf("msg_%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
}

// A Sender delivers to one destination: it returns, for each delivery,
// nil once the destination took it, ErrNotSent when it ran out of time
// before trying it, or why the destination did not take it.
type Sender interface {
	Send(ctx context.Context, deliveries []db.Delivery) []error
}

// ErrNotSent is a delivery a Sender did not try: the batch's time was up.
// It goes back untried, its attempts unchanged.
var ErrNotSent = errors.New("not sent: the batch's time was up")

// The delivery dispatchers' limits (contract §15).
const (
	// DeliveryBatch is the most deliveries one batch sends; what the
	// batch's timeout leaves unsent goes back, untried.
	DeliveryBatch = 500
	// DeliveryRetryBase and DeliveryRetryCap bound the backoff of a
	// failed delivery.
	DeliveryRetryBase = time.Second
	DeliveryRetryCap  = 10 * time.Minute
	// deliveryLeaseMargin is how much longer than its timeout a round
	// holds the deliveries it sends: a worker that died mid-round lets
	// them go that much later.
	deliveryLeaseMargin = 5 * time.Second
)

// Deliverer sends one destination's deliveries (contract §15), as the
// Dispatcher sends Hatchet's pushes: in the background in a running
// worker, woken after each commit that queued deliveries; once, inline,
// for a command.
type Deliverer struct {
	id         string
	sender     Sender
	db         *bun.DB
	logger     *slog.Logger
	now        func() time.Time
	backoff    db.Backoff
	wake       chan struct{}
	background atomic.Bool
	gaveUp     atomic.Bool
}

// NewDeliverer returns the deliverer of the destination id's deliveries
// in conn through sender; a delivery is dead after maxAttempts failures.
func NewDeliverer(id string, sender Sender, conn *bun.DB, logger *slog.Logger, now func() time.Time, maxAttempts int) *Deliverer {
	return &Deliverer{id: id, sender: sender, db: conn, logger: logger.With(slog.String("destination", id)), now: now,
		backoff: db.Backoff{Base: DeliveryRetryBase, Limit: DeliveryRetryCap, MaxAttempts: maxAttempts}, wake: make(chan struct{}, 1)}
}

// ID is the destination's id.
func (p *Deliverer) ID() string { return p.id }

// Deliver sends the destination's due deliveries, a batch of at most
// DeliveryBatch at a time, until none is due or a batch delivered
// nothing, each batch within timeout; it returns how many arrived. A
// delivery that failed is backed off or, at its last attempt, dead, and
// Deliver returns the first such failure after the batches.
//
// The database's turn overlaps the receiver's: while a batch is on the
// wire, the next is claimed and the one before is recorded. That keeps
// the order per (user, bucket): a delivery whose predecessor is still
// undelivered is not due, so an early claim passes it over, and a claim
// made once its predecessor is recorded picks it up.
func (p *Deliverer) Deliver(ctx context.Context, timeout time.Duration) (int, error) {
	// A claimed batch may wait for the one before it: its lease covers both.
	lease := 2*timeout + deliveryLeaseMargin
	claim := func() ([]db.Delivery, error) {
		return db.ClaimDeliveries(ctx, p.db, p.id, p.now(), lease, DeliveryBatch)
	}
	var recording chan error // the previous batch's outcome, being recorded
	recorded := func() error {
		if recording == nil {
			return nil
		}
		defer func() { recording = nil }()
		return <-recording
	}
	type claimed struct {
		rows []db.Delivery
		err  error
	}
	total := 0
	var failure error
	batch, err := claim()
	for err == nil && len(batch) > 0 {
		early := make(chan claimed, 1)
		go func() {
			rows, err := claim()
			early <- claimed{rows, err}
		}()
		sendCtx, cancel := context.WithTimeout(ctx, timeout)
		errs := p.sender.Send(sendCtx, batch)
		cancel()
		n := 0
		for _, e := range errs {
			switch {
			case e == nil:
				n++
			case failure == nil && !errors.Is(e, ErrNotSent):
				failure = e
			}
		}
		total += n
		err = recorded()
		if err == nil {
			recording = make(chan error, 1)
			go func(done chan<- error, rows []db.Delivery) { done <- p.record(ctx, rows, errs) }(recording, batch)
		}
		next := <-early
		switch {
		case err != nil || next.err != nil || n == 0:
			// On an error, or when nothing arrived (the destination is
			// down), the early batch goes back until its own turn.
			p.release(ctx, next.rows)
			err = cmp.Or(err, next.err)
			batch = nil
		case len(next.rows) == 0:
			// The batch being recorded may let the next delivery of one
			// of its (user, bucket)s through.
			if err = recorded(); err == nil {
				batch, err = claim()
			}
		default:
			batch = next.rows
		}
	}
	return total, cmp.Or(err, recorded(), failure)
}

// record stores the outcome of each delivery of a sent batch, even when
// ctx ended: the rows were sent.
func (p *Deliverer) record(ctx context.Context, rows []db.Delivery, errs []error) error {
	ctx = context.WithoutCancel(ctx)
	now := p.now()
	var ok, unsent []int64
	for i, r := range rows {
		switch {
		case errs[i] == nil:
			ok = append(ok, r.ID)
			continue
		case errors.Is(errs[i], ErrNotSent):
			unsent = append(unsent, r.ID)
			continue
		}
		if err := db.MarkDeliveryFailed(ctx, p.db, r.ID, errs[i].Error(), now, p.backoff); err != nil {
			return err
		}
		if r.Attempts+1 >= p.backoff.MaxAttempts {
			p.logger.ErrorContext(ctx, "a delivery is dead: it failed too often (bucket-worker outbox --retry-dead queues it again)",
				slog.String("user_id", r.UserID), slog.String("bucket_id", r.BucketID), slog.Int("attempts", r.Attempts+1), slog.Any("error", errs[i]))
		}
	}
	if err := db.ReleaseDeliveries(ctx, p.db, unsent); err != nil {
		return err
	}
	return db.MarkDelivered(ctx, p.db, ok, now)
}

// release gives claimed deliveries back unsent; a failure only leaves
// them to their lease.
func (p *Deliverer) release(ctx context.Context, rows []db.Delivery) {
	if err := db.ReleaseDeliveries(context.WithoutCancel(ctx), p.db, rowIDs(rows, func(r db.Delivery) int64 { return r.ID })); err != nil {
		p.logger.WarnContext(ctx, "claimed deliveries wait for their lease to lapse", slog.Int("deliveries", len(rows)), slog.Any("error", err))
	}
}

// Wake asks the background deliverer for a round now; it never blocks.
func (p *Deliverer) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run delivers in the background until ctx ends: every interval, and
// whenever woken.
func (p *Deliverer) Run(ctx context.Context, interval time.Duration) {
	p.background.Store(true)
	defer p.background.Store(false)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := p.Deliver(ctx, DeliveryTimeout); err != nil && ctx.Err() == nil {
			p.logger.WarnContext(ctx, "deliveries failed; each is tried again after its backoff", slog.Int("delivered", n), slog.Any("error", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
		}
	}
}

// DeliveryTimeout bounds one round of a running worker's deliverer; a
// command's rounds take CommandPushTimeout.
const DeliveryTimeout = 30 * time.Second

// notify is called after a transaction queued deliveries: it wakes the
// background deliverer, or delivers inline, and returns how many it
// delivered itself. Inline, once a delivery failed, it stops trying: the
// rest stays pending for `outbox --flush` or a running worker.
func (p *Deliverer) notify(ctx context.Context) int {
	if p.background.Load() {
		p.Wake()
		return 0
	}
	return p.Flush(ctx)
}

// Flush delivers inline what is due, unless a delivery to the destination
// already failed in this process, and returns how many arrived.
func (p *Deliverer) Flush(ctx context.Context) int {
	if p.gaveUp.Load() {
		return 0
	}
	n, err := p.Deliver(ctx, CommandPushTimeout)
	if err != nil && ctx.Err() == nil && !p.gaveUp.Swap(true) {
		p.logger.WarnContext(ctx, "the destination did not take the deliveries: they stay pending "+
			"(bucket-worker outbox --flush, or a running worker, sends them)", slog.Any("error", err))
	}
	return n
}
