package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
	"github.com/bucketworker/bucket-worker/journeys"
)

const (
	day  = 24 * time.Hour
	week = 7 * day
)

// t0 is where every test clock starts.
var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// clock is a test clock that moves only when told to.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeHatchet records pushes and cancellations; it fails pushes while
// fail is set. It stands in for the network, not for the database.
type fakeHatchet struct {
	mu        sync.Mutex
	fail      error
	pushes    []db.OutboxEvent
	calls     int
	sizes     []int // the events of each call
	cancelled []string
}

func (h *fakeHatchet) Push(_ context.Context, events []db.OutboxEvent) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	h.sizes = append(h.sizes, len(events))
	if h.fail != nil {
		return h.fail
	}
	h.pushes = append(h.pushes, events...)
	return nil
}

func (h *fakeHatchet) CancelRuns(_ context.Context, ids []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cancelled = append(h.cancelled, ids...)
	return nil
}

func (h *fakeHatchet) setFail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = err
}

// pushedKeys counts the pushes by idempotency key.
func (h *fakeHatchet) pushedKeys() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for _, e := range h.pushes {
		out[deref(e.IdempotencyKey)]++
	}
	return out
}

// env is a test's engine: its own database, definitions, clock and Hatchet.
type env struct {
	t       testing.TB
	ctx     context.Context
	db      *bun.DB
	clock   *clock
	hatchet *fakeHatchet
	deps    *Deps
}

// defs is a definitions folder: file name under buckets/ or journeys/ → content.
type defs map[string]string

func newEnv(t testing.TB, files defs) *env {
	t.Helper()
	conn, _ := dbtest.New(t)
	return newEnvOn(t, conn, &clock{now: t0}, files)
}

// newEnvOn is newEnv on an existing database and clock: a worker
// restarted with other definitions, or a second replica.
func newEnvOn(t testing.TB, conn *bun.DB, clk *clock, files defs) *env {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, content := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(content)}
	}
	bs, report := buckets.Load(fsys)
	require.NoError(t, report.Err())
	js, jreport := journeys.Load(fsys)
	require.NoError(t, jreport.Err())
	e := &env{t: t, ctx: context.Background(), db: conn, clock: clk, hatchet: &fakeHatchet{}}
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	schema, err := db.ReadSchema(e.ctx, conn)
	require.NoError(t, err)
	e.deps = &Deps{
		DB:         conn,
		Schema:     schema,
		Buckets:    buckets.NewRegistry(bs),
		Journeys:   journeys.NewRegistry(js),
		Logger:     logger,
		Now:        e.clock.Now,
		Switch:     NewRuntimeSwitch(conn, 0),
		Hatchet:    e.hatchet,
		Dispatcher: NewDispatcher(conn, e.hatchet, logger, e.clock.Now),
		// A backfill job with no progress for two hours is dead.
		BackfillTimeout: time.Hour,
	}
	return e
}

// offline is the env's deps without Hatchet, as a command without
// HATCHET_CLIENT_TOKEN runs: pushes stay pending in the outbox.
func (e *env) offline() *Deps {
	d := *e.deps
	d.Hatchet, d.Dispatcher = nil, nil
	return &d
}

// dispatch runs the env's dispatcher as a command does.
func (e *env) dispatch() (int, error) {
	return e.deps.Dispatcher.Dispatch(e.ctx, CommandPushTimeout)
}

func (e *env) bucket(id string) *buckets.Bucket {
	b, ok := e.deps.Buckets.Get(id)
	require.True(e.t, ok, "bucket %s", id)
	return b
}

func (e *env) exec(query string, args ...any) {
	e.t.Helper()
	_, err := e.db.NewRaw(query, args...).Exec(e.ctx)
	require.NoError(e.t, err)
}

// contact creates a live contact for the user with the properties (JSON).
func (e *env) contact(userID, props string) {
	e.t.Helper()
	require.NoError(e.t, dbtest.InsertContact(e.ctx, e.db, &db.Contact{
		ExternalID: &userID, Email: ptr(" " + userID + "@Example.com "), Properties: []byte(props),
	}))
}

// setDeleted soft-deletes the user's contact at at, or makes it live
// again with nil.
func (e *env) setDeleted(userID string, at *time.Time) {
	e.t.Helper()
	c, err := db.ContactByUser(e.ctx, e.db, userID)
	require.NoError(e.t, err)
	require.NotNil(e.t, c, "user %s has a contact", userID)
	c.DeletedAt = at
	require.NoError(e.t, dbtest.UpdateContact(e.ctx, e.db, *c))
}

// update writes the membership row as it is now.
func (e *env) update(m db.Membership) {
	e.t.Helper()
	require.NoError(e.t, dbtest.UpdateMembership(e.ctx, e.db, m))
}

// left records that the user was a member of the bucket from entered to
// left (epoch 1, no event).
func (e *env) left(bucketID, userID string, entered, left time.Time) {
	e.t.Helper()
	m := dbtest.Members([]string{userID}, bucketID, entered)[0]
	m.Status, m.LeftAt = db.StatusLeft, &left
	require.NoError(e.t, dbtest.InsertMemberships(e.ctx, e.db, []db.Membership{m}))
}

// events stores one event per age, at now - age.
func (e *env) events(userID, name string, ages ...time.Duration) {
	e.t.Helper()
	e.eventsWith(userID, name, "", ages...)
}

// eventsWith is events with the properties (JSON; "" for none).
func (e *env) eventsWith(userID, name, props string, ages ...time.Duration) {
	e.t.Helper()
	rows := make([]db.UserEvent, len(ages))
	for i, a := range ages {
		rows[i] = db.UserEvent{UserID: userID, Event: name, OccurredAt: e.clock.Now().Add(-a)}
		if props != "" {
			rows[i].Properties = json.RawMessage(props)
		}
	}
	require.NoError(e.t, dbtest.InsertUserEvents(e.ctx, e.db, rows))
}

// member makes the user an active member who entered at now - ago.
func (e *env) member(bucketID, userID string, ago time.Duration) db.Membership {
	e.t.Helper()
	m := db.Membership{UserID: userID, BucketID: bucketID, Status: db.StatusActive,
		EnteredAt: e.clock.Now().Add(-ago), EntryCount: 1, Source: ptr(string(SourceEvent))}
	require.NoError(e.t, dbtest.InsertMemberships(e.ctx, e.db, []db.Membership{m}))
	rows := e.memberships(bucketID, userID)
	return rows[len(rows)-1]
}

// backfilled records the bucket's current criteria as backfilled, which
// opens its join pass.
func (e *env) backfilled(bucketID string) {
	e.t.Helper()
	require.NoError(e.t, db.SetCriteriaHash(e.ctx, e.db, bucketID, e.bucket(bucketID).CriteriaHash, e.clock.Now()))
}

func (e *env) sweep(in ReconcileInput) ReconcileOutput {
	e.t.Helper()
	out, err := Reconcile(e.ctx, e.deps, in)
	require.NoError(e.t, err)
	for _, b := range out.Buckets {
		require.Empty(e.t, b.Error, "bucket %s", b.BucketID)
	}
	return out
}

func (out ReconcileOutput) bucket(id string) BucketSweep {
	for _, b := range out.Buckets {
		if b.BucketID == id {
			return b
		}
	}
	return BucketSweep{}
}

// memberships returns the pair's rows, oldest first.
func (e *env) memberships(bucketID, userID string) []db.Membership {
	e.t.Helper()
	var rows []db.Membership
	require.NoError(e.t, e.db.NewSelect().Model(&rows).
		Where("m.bucket_id = ? AND m.user_id = ?", bucketID, userID).
		OrderExpr("m.entry_count").Scan(e.ctx))
	return rows
}

func (e *env) status(bucketID, userID string) string {
	rows := e.memberships(bucketID, userID)
	if len(rows) == 0 {
		return "none"
	}
	return rows[len(rows)-1].Status
}

// transitions returns the worker's transition events of the user, oldest first.
func (e *env) transitions(userID string) []db.UserEvent {
	e.t.Helper()
	var rows []db.UserEvent
	require.NoError(e.t, e.db.NewSelect().Model(&rows).
		Where("e.user_id = ? AND e.source = 'bucket'", userID).
		OrderExpr("e.occurred_at, e.idempotency_key").Scan(e.ctx))
	return rows
}

func (e *env) count(query string, args ...any) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.NewRaw(query, args...).Scan(e.ctx, &n))
	return n
}

var errHatchetDown = errors.New("hatchet unavailable")
