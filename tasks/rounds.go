package tasks

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// ingestEvents is the one decision path of ingested events, for a single
// ingest (a batch of one) as for a batch of a thousand (contract §7,
// §7.1). Each user's events are put in order of occurredAt, then of
// position, and ingested in rounds, the k-th round holding the k-th event
// of every user. A round is one transaction of a few statements for all
// its users — the events stored with their contacts (db.StoreEvents), the
// journey exits, the membership locks, and per candidate bucket the joins
// of its non-members, decided in their insert, and one compiled
// evaluation of its members (db.EvaluateUsers) with their leaves, through
// the funnel — and since users are evaluated independently, each event's
// transitions are those its single ingest would make.
//
// It returns each event's result, and the order the events were ingested
// in: users in order of first appearance, each user's events in turn. A
// bucket:* event is ignored (contract §5.7) and takes no part.
func ingestEvents(ctx context.Context, d *Deps, mode IngestMode, events []IngestEvent) (results []IngestOutput, order []int, err error) {
	in := &ingestion{d: d, mode: mode, now: d.Now(), events: events, results: make([]IngestOutput, len(events))}
	byUser := map[string][]int{}
	var users []string
	for i, ev := range events {
		in.results[i] = IngestOutput{Transitions: []Transition{}, Exited: []string{}}
		if strings.HasPrefix(ev.Event, reservedPrefix) {
			in.results[i].Status, in.results[i].Reason = StatusIgnored, ReasonReservedPrefix
			continue
		}
		if _, seen := byUser[ev.UserID]; !seen {
			users = append(users, ev.UserID)
		}
		byUser[ev.UserID] = append(byUser[ev.UserID], i)
	}
	for _, user := range users {
		slices.SortStableFunc(byUser[user], func(a, b int) int {
			return occurredAt(events[a], in.now).Compare(occurredAt(events[b], in.now))
		})
		order = append(order, byUser[user]...)
	}
	if in.candidates, err = eventCandidates(ctx, d, events, order); err != nil {
		return in.results, order, err
	}
	for _, round := range rounds(events, users, byUser) {
		if err := in.round(ctx, round); err != nil {
			return in.results, order, err
		}
	}
	return in.results, order, nil
}

// ingestion is one call of ingestEvents: the events, each one's
// candidate buckets and result, the mode and the instant they are ingested
// at, and the deps.
type ingestion struct {
	d          *Deps
	mode       IngestMode
	now        time.Time
	events     []IngestEvent
	candidates map[int][]*buckets.Bucket
	results    []IngestOutput
}

// rounds deals each user's events, in order, into rounds: each event goes
// in the first round after its predecessor's that does not hold its key,
// so that a round has at most one event per user and per key, and a key
// repeated in the batch is stored by an earlier round and found stored by
// a later one. A round holds indexes of events.
func rounds(events []IngestEvent, users []string, byUser map[string][]int) [][]int {
	var out [][]int
	var roundKeys []map[string]bool
	for _, user := range users {
		r := 0
		for _, i := range byUser[user] {
			key := events[i].IdempotencyKey
			for r < len(out) && key != nil && roundKeys[r][*key] {
				r++
			}
			if r == len(out) {
				out, roundKeys = append(out, nil), append(roundKeys, map[string]bool{})
			}
			out[r] = append(out[r], i)
			if key != nil {
				roundKeys[r][*key] = true
			}
			r++
		}
	}
	return out
}

// eventCandidates returns, by event index, the candidate buckets of each
// of the events (contract §5.3) that the runtime switch leaves on. It reads
// the switch, so call it before opening a transaction (see switchedOn).
func eventCandidates(ctx context.Context, d *Deps, events []IngestEvent, indexes []int) (map[int][]*buckets.Bucket, error) {
	byIndex := make(map[int][]*buckets.Bucket, len(indexes))
	var all []*buckets.Bucket
	for _, i := range indexes {
		ev := events[i]
		bs := d.Buckets.Candidates(ev.Event, slices.Sorted(maps.Keys(ev.ContactProperties)))
		byIndex[i] = bs
		for _, b := range bs {
			if !slices.Contains(all, b) {
				all = append(all, b)
			}
		}
	}
	on, err := switchedOn(ctx, d, all)
	if err != nil {
		return nil, err
	}
	for i, bs := range byIndex {
		byIndex[i] = slices.DeleteFunc(bs, func(b *buckets.Bucket) bool { return !slices.Contains(on, b) })
	}
	return byIndex, nil
}

// errKeyRaced rolls back a round in which another transaction stored one
// of its keys after the snapshot of the statement that stores them; the
// round runs again and finds the key stored.
var errKeyRaced = errors.New("an idempotency key was stored concurrently")

// keyRaceAttempts is how often a round runs whose keys keep racing.
const keyRaceAttempts = 5

// roundEvent is an event of a round whose user is evaluated: stored
// (store mode) or to be evaluated (evaluate mode).
type roundEvent struct {
	index  int
	userID string
	// email is the one a join records: the live contact's, else the
	// event's.
	email string
}

// round ingests the events of a round — of distinct users — in one
// transaction and writes each one's result.
func (in *ingestion) round(ctx context.Context, round []int) error {
	for attempt := 1; ; attempt++ {
		var live []roundEvent
		outcome, err := in.d.transact(ctx, in.now, func(ctx context.Context, t *txn) error {
			users := make([]string, len(round))
			for k, i := range round {
				in.results[i] = IngestOutput{Transitions: []Transition{}, Exited: []string{}}
				users[k] = in.events[i].UserID
			}
			// The users' locks first: an erasure that committed before
			// is seen by every statement after, one that comes after
			// waits for this round (contract §5.3, §7).
			if err := t.lockUsers(ctx, users); err != nil {
				return err
			}
			var err error
			if in.mode == IngestStore {
				live, err = in.store(ctx, t, round)
			} else {
				live, err = in.lock(ctx, t, round)
			}
			if err != nil {
				return err
			}
			return in.evaluate(ctx, t, live)
		})
		switch {
		case errors.Is(err, errKeyRaced) && attempt < keyRaceAttempts:
			continue
		case err != nil:
			return fmt.Errorf("ingesting a round of %d events: %w", len(round), err)
		}
		byUser := make(map[string]*IngestOutput, len(live))
		for _, ev := range live {
			res := &in.results[ev.index]
			res.Stored = in.mode == IngestStore
			res.ClampedOccurredAt = res.Stored && clamped(in.events[ev.index], in.now)
			byUser[ev.userID] = res
		}
		for _, tr := range outcome.Transitions {
			byUser[tr.UserID].Transitions = append(byUser[tr.UserID].Transitions, tr)
		}
		for _, s := range outcome.Exited {
			if res := byUser[s.UserID]; !slices.Contains(res.Exited, s.JourneyID) {
				res.Exited = append(res.Exited, s.JourneyID)
			}
		}
		return nil
	}
}

// store is the store-mode part of a round: it stores the events in one
// statement (db.StoreEvents), which upserts their users' contacts and
// leaves out the events whose key is stored (duplicates, which patch no
// contact) and those of erased users (ignored, even when their key is
// stored too), and exits the journeys the events end. It returns the
// events whose users are then evaluated.
func (in *ingestion) store(ctx context.Context, t *txn, round []int) ([]roundEvent, error) {
	events, results := in.events, in.results
	arrivals := make([]db.Arrival, len(round))
	for k, i := range round {
		ev := events[i]
		arrivals[k] = db.Arrival{
			Event: db.UserEvent{UserID: ev.UserID, Event: ev.Event, Properties: ev.PropertiesJSON,
				IdempotencyKey: ev.IdempotencyKey, Source: ptr("ingest"), OccurredAt: occurredAt(ev, t.now)},
			Email:             ev.UserEmail,
			ContactProperties: ev.ContactPropertiesJSON,
		}
	}
	arrived, err := db.StoreEvents(ctx, t.tx, t.d.Schema, arrivals, t.now)
	if err != nil {
		return nil, err
	}
	var live []roundEvent
	exits := journeyExits{}
	for k, i := range round {
		ev, a := events[i], arrived[k]
		switch {
		case a.Erased:
			results[i].Status, results[i].Reason = StatusIgnored, ReasonContactDeleted
			continue
		case a.Duplicate:
			continue
		case !a.Stored:
			return nil, errKeyRaced
		}
		live = append(live, roundEvent{index: i, userID: ev.UserID, email: contactEmail(a.Contact, deref(ev.UserEmail))})
		exits.add(t.d.Journeys.ExitingOn(ev.Event, ev.Properties), ev.UserID)
	}
	return live, t.exit(ctx, exits)
}

// lock is the evaluate-mode part of a round: another writer stored the
// events, so it only locks the users' contacts — the per-user lock of an
// evaluation that does not write the contact (contract §5.3) — and leaves
// out the erased users.
func (in *ingestion) lock(ctx context.Context, t *txn, round []int) ([]roundEvent, error) {
	events, results := in.events, in.results
	users := make([]string, len(round))
	for k, i := range round {
		users[k] = events[i].UserID
	}
	contacts, err := db.LockContactsByUser(ctx, t.tx, users)
	if err != nil {
		return nil, err
	}
	var live []roundEvent
	for _, i := range round {
		ev := events[i]
		c := contacts[ev.UserID]
		if c != nil && c.DeletedAt != nil {
			results[i].Status, results[i].Reason = StatusIgnored, ReasonContactDeleted
			continue
		}
		live = append(live, roundEvent{index: i, userID: ev.UserID, email: contactEmail(c, deref(ev.UserEmail))})
	}
	return live, nil
}

// contactEmail is the email a join of the user records: the contact's
// (nil for none) when it has one, else the event's.
func contactEmail(c *db.Contact, eventEmail string) string {
	if c != nil && c.Email != nil && *c.Email != "" {
		return *c.Email
	}
	return eventEmail
}

// evaluate decides the candidate buckets of a round's users: it locks
// their active memberships of those buckets in one statement — so every
// later statement sees the commits of the paths it waited for (contract
// §5.3) — then decides each bucket for its users (txn.decide), bucket by
// bucket in dependency order.
func (in *ingestion) evaluate(ctx context.Context, t *txn, live []roundEvent) error {
	byBucket := map[string][]roundEvent{}
	var users, bucketIDs []string
	for _, ev := range live {
		users = append(users, ev.userID)
		for _, b := range in.candidates[ev.index] {
			byBucket[b.ID] = append(byBucket[b.ID], ev)
			if !slices.Contains(bucketIDs, b.ID) {
				bucketIDs = append(bucketIDs, b.ID)
			}
		}
	}
	rows, err := db.LockUserMemberships(ctx, t.tx, users, bucketIDs)
	if err != nil {
		return err
	}
	active := map[string]map[string]db.Membership{}
	for _, m := range rows {
		if active[m.BucketID] == nil {
			active[m.BucketID] = map[string]db.Membership{}
		}
		active[m.BucketID][m.UserID] = m
	}
	for _, b := range t.d.Buckets.All() {
		var decided []db.Joiner
		for _, ev := range byBucket[b.ID] {
			// A user a cascade into b decided already keeps that
			// decision: what b reads moved before the cascade, and
			// moves after it cascade again.
			if !t.cascaded[[2]string{b.ID, ev.userID}] {
				decided = append(decided, db.Joiner{UserID: ev.userID, Email: ev.email})
			}
		}
		if err := t.decide(ctx, b, decided, active[b.ID], joinSpec{Source: SourceEvent}); err != nil {
			return fmt.Errorf("bucket %q: %w", b.ID, err)
		}
	}
	return nil
}
