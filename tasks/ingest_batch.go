package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// DefaultBatchEvent is the event key of a batch of events
// (INGEST_BATCH_EVENT, contract §7.1).
const DefaultBatchEvent = "events:batch"

// MaxBatchEvents is the most events one batch carries.
const MaxBatchEvents = 1000

// BatchElement is one event of a batch: its position, and the event or
// why it is invalid.
type BatchElement struct {
	Index int
	Event IngestEvent
	Err   error
}

// BatchError reports an invalid element of a batch.
type BatchError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// BatchOutput is the output of a batch ingest (contract §7.1).
type BatchOutput struct {
	Stored     int `json:"stored"`
	Duplicates int `json:"duplicates"`
	// Ignored counts the elements ingested without effect: a bucket:*
	// event, or a user who is erased.
	Ignored     int          `json:"ignored"`
	Invalid     []BatchError `json:"invalid"`
	Transitions []Transition `json:"transitions"`
	Exited      []string     `json:"exited"`
}

// ParseIngestBatch reads a batch payload, {"events": [{"event": name, ...the
// §7 payload}, ...]} with at most MaxBatchEvents elements. A payload of
// another shape is an ErrInvalidInput error; an element that is invalid
// carries its error and spoils none of the others.
func ParseIngestBatch(payload []byte) ([]BatchElement, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: the batch %s", ErrInvalidInput, fmt.Sprintf(format, args...))
	}
	if problem := jsonTextProblem(payload); problem != "" {
		return nil, bad("%s", problem)
	}
	fields, err := objectFields(payload)
	if err != nil {
		return nil, bad(`%v: {"events": [...]}`, err)
	}
	var events []json.RawMessage
	raw, ok := fields["events"]
	if !ok || string(raw) == "null" || json.Unmarshal(raw, &events) != nil {
		return nil, bad(`has no "events" list`)
	}
	if len(events) > MaxBatchEvents {
		return nil, bad("has %d events; at most %d are allowed", len(events), MaxBatchEvents)
	}
	elements := make([]BatchElement, len(events))
	for i, raw := range events {
		elements[i] = BatchElement{Index: i}
		elements[i].Event, elements[i].Err = ParseBatchElement(raw)
	}
	return elements, nil
}

// ParseBatchElement reads one element of a batch: an object with the
// event's name under "event" and the rest of the §7 payload, which
// ParseIngestPayload judges. Errors wrap ErrInvalidInput.
func ParseBatchElement(raw []byte) (IngestEvent, error) {
	fields, err := objectFields(raw)
	if err != nil {
		return IngestEvent{}, fmt.Errorf("%w: an element must be an event object", ErrInvalidInput)
	}
	var event string
	if json.Unmarshal(fields["event"], &event) != nil || event == "" {
		return IngestEvent{}, fmt.Errorf("%w: event is required: the event's name", ErrInvalidInput)
	}
	return ParseIngestPayload(event, raw)
}

// InvalidReason is what an ErrInvalidInput error says about the input,
// without the words "invalid input".
func InvalidReason(err error) string {
	return strings.TrimPrefix(err.Error(), ErrInvalidInput.Error()+": ")
}

// HandleBatch is bucket-ingest for a batch push (contract §7.1): a payload
// of another shape is an ErrInvalidInput error and nothing is written.
func HandleBatch(ctx context.Context, d *Deps, mode string, payload []byte, runID string) (BatchOutput, error) {
	elements, err := ParseIngestBatch(payload)
	if err != nil {
		return BatchOutput{}, err
	}
	return IngestBatch(ctx, d, mode, elements, runID)
}

// IngestBatch ingests the valid elements with the semantics of as many
// single ingests (contract §7.1), set-based: each user's events are put in
// order of occurredAt, then of position, and the batch is ingested in
// rounds, the k-th round holding the k-th event of every user. A round is
// one transaction of a few statements for all its users — the key lookup,
// the contact upsert, the event insert, the journey exits, the membership
// locks, and per candidate bucket one evaluation and its joins and leaves
// — and since users are evaluated independently, each event's transitions
// are those its single ingest would make. An element without
// idempotencyKey is stored as hatchet-run:<runID>:<index>, so a retry of
// the run never counts it twice; outside Hatchet (runID "") it is stored
// without a key.
func IngestBatch(ctx context.Context, d *Deps, mode string, elements []BatchElement, runID string) (BatchOutput, error) {
	out := BatchOutput{Invalid: []BatchError{}, Transitions: []Transition{}, Exited: []string{}}
	now := d.Now()
	results := make([]IngestOutput, len(elements))
	byUser := map[string][]BatchElement{}
	var users []string
	for _, el := range elements {
		switch {
		case el.Err != nil:
			out.Invalid = append(out.Invalid, BatchError{Index: el.Index, Error: InvalidReason(el.Err)})
			continue
		case strings.HasPrefix(el.Event.Event, reservedPrefix):
			results[el.Index].Status, results[el.Index].Reason = StatusIgnored, ReasonReservedPrefix
			out.Ignored++
			continue
		}
		if el.Event.IdempotencyKey == nil && runID != "" {
			el.Event.IdempotencyKey = ptr(fmt.Sprintf("%s%s:%d", runKeyPrefix, runID, el.Index))
		}
		if _, seen := byUser[el.Event.UserID]; !seen {
			users = append(users, el.Event.UserID)
		}
		byUser[el.Event.UserID] = append(byUser[el.Event.UserID], el)
	}
	rounds := batchRounds(users, byUser, now)
	on, err := batchCandidates(ctx, d, elements)
	if err != nil {
		return out, err
	}
	for _, round := range rounds {
		if err := ingestRound(ctx, d, mode, round, on, now, results); err != nil {
			return out, err
		}
	}

	// The report follows the batch's order per user: each user's events
	// as they were ingested.
	for _, user := range users {
		for _, el := range byUser[user] {
			res := results[el.Index]
			switch {
			case res.Stored:
				out.Stored++
			case res.Status == StatusIgnored:
				out.Ignored++
			case mode == IngestStore:
				out.Duplicates++
			}
			out.Transitions = append(out.Transitions, res.Transitions...)
			for _, j := range res.Exited {
				if !slices.Contains(out.Exited, j) {
					out.Exited = append(out.Exited, j)
				}
			}
		}
	}
	return out, nil
}

// batchRounds puts each user's events in order of occurredAt, then of
// position, and deals them into rounds: each event goes in the first round
// after its predecessor's that does not hold its key, so that a round has
// at most one event per user and per key, and a key repeated in the batch
// is stored by an earlier round and found stored by a later one.
func batchRounds(users []string, byUser map[string][]BatchElement, now time.Time) [][]BatchElement {
	var rounds [][]BatchElement
	var roundKeys []map[string]bool
	for _, user := range users {
		events := byUser[user]
		slices.SortStableFunc(events, func(a, b BatchElement) int {
			return occurredAt(a.Event, now).Compare(occurredAt(b.Event, now))
		})
		r := 0
		for _, el := range events {
			key := el.Event.IdempotencyKey
			for r < len(rounds) && key != nil && roundKeys[r][*key] {
				r++
			}
			if r == len(rounds) {
				rounds, roundKeys = append(rounds, nil), append(roundKeys, map[string]bool{})
			}
			rounds[r] = append(rounds[r], el)
			if key != nil {
				roundKeys[r][*key] = true
			}
			r++
		}
	}
	return rounds
}

// batchCandidates returns the candidate buckets of each valid element
// that the runtime switch leaves on, by element index.
func batchCandidates(ctx context.Context, d *Deps, elements []BatchElement) (map[int][]*buckets.Bucket, error) {
	byIndex := map[int][]*buckets.Bucket{}
	seen := map[string]bool{}
	var ids []string
	for _, el := range elements {
		if el.Err != nil {
			continue
		}
		bs := d.Buckets.Candidates(el.Event.Event, slices.Sorted(maps.Keys(el.Event.ContactProperties)))
		byIndex[el.Index] = bs
		for _, b := range bs {
			if !seen[b.ID] {
				seen[b.ID] = true
				ids = append(ids, b.ID)
			}
		}
	}
	enabled, err := switchedOnIDs(ctx, d, ids)
	if err != nil {
		return nil, err
	}
	for i, bs := range byIndex {
		byIndex[i] = slices.DeleteFunc(bs, func(b *buckets.Bucket) bool { return !enabled[b.ID] })
	}
	return byIndex, nil
}

// errKeyRaced rolls back a round in which another transaction stored one
// of its keys between the key lookup and the insert; the round runs again
// and finds the key stored.
var errKeyRaced = errors.New("an idempotency key was stored concurrently")

// keyRaceAttempts is how often a round runs whose keys keep racing.
const keyRaceAttempts = 5

// ingestRound ingests events of distinct users in one transaction and
// writes each one's result into results.
func ingestRound(ctx context.Context, d *Deps, mode string, round []BatchElement, on map[int][]*buckets.Bucket, now time.Time, results []IngestOutput) error {
	for attempt := 1; ; attempt++ {
		var live []roundEvent
		outcome, err := transact(ctx, d, func(ctx context.Context, tx bun.Tx) (Outcome, error) {
			for _, el := range round {
				results[el.Index] = IngestOutput{Transitions: []Transition{}, Exited: []string{}}
			}
			var err error
			var exited []db.JourneyState
			if mode == IngestStore {
				live, exited, err = storeRound(ctx, tx, d, round, now, results)
			} else {
				live, err = lockRound(ctx, tx, round, results)
			}
			if err != nil {
				return Outcome{}, err
			}
			transitions, err := evaluateRound(ctx, tx, d, live, on, now)
			transitions.Exited = append(exited, transitions.Exited...)
			return transitions, err
		})
		switch {
		case errors.Is(err, errKeyRaced) && attempt < keyRaceAttempts:
			continue
		case err != nil:
			return fmt.Errorf("ingesting a round of %d events: %w", len(round), err)
		}
		byUser := make(map[string]*IngestOutput, len(live))
		for _, ev := range live {
			res := &results[ev.Index]
			res.Stored = mode == IngestStore
			res.ClampedOccurredAt = res.Stored && clamped(ev.Event, now)
			byUser[ev.UserID] = res
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

// roundEvent is an event of a round whose user is evaluated: stored (store
// mode) or to be evaluated (evaluate mode), and the user as then.
type roundEvent struct {
	BatchElement
	subject
}

// storeRound is storeEvent for a round, whose events have distinct users
// and keys: it upserts the contacts and stores the events in one statement
// each, leaving out the events whose key is stored (duplicates) and those
// of erased users, and exits the journeys the events end. As for a single
// ingest, an erased user's event is ignored rather than a duplicate, and a
// duplicate patches no contact.
func storeRound(ctx context.Context, tx bun.IDB, d *Deps, round []BatchElement, now time.Time, results []IngestOutput) ([]roundEvent, []db.JourneyState, error) {
	var keys []string
	for _, el := range round {
		if k := el.Event.IdempotencyKey; k != nil {
			keys = append(keys, *k)
		}
	}
	taken, err := db.StoredKeys(ctx, tx, keys)
	if err != nil {
		return nil, nil, err
	}
	var fresh []BatchElement
	var patches []db.ContactPatch
	var duplicates []BatchElement
	var duplicated []string
	for _, el := range round {
		if k := el.Event.IdempotencyKey; k != nil && taken[*k] {
			duplicates, duplicated = append(duplicates, el), append(duplicated, el.Event.UserID)
			continue
		}
		fresh = append(fresh, el)
		patches = append(patches, db.ContactPatch{UserID: el.Event.UserID, Email: el.Event.UserEmail, Properties: el.Event.ContactPropertiesJSON})
	}
	if len(duplicates) > 0 {
		contacts, err := db.ContactsByUser(ctx, tx, duplicated)
		if err != nil {
			return nil, nil, err
		}
		for _, el := range duplicates {
			if c := contacts[el.Event.UserID]; c != nil && c.DeletedAt != nil {
				results[el.Index].Status, results[el.Index].Reason = StatusIgnored, ReasonContactDeleted
			}
		}
	}
	contacts, err := db.UpsertContacts(ctx, tx, patches, now)
	if err != nil {
		return nil, nil, err
	}
	var live []roundEvent
	var events []db.UserEvent
	exits := journeyExits{}
	for _, el := range fresh {
		ev := el.Event
		contact := contacts[ev.UserID]
		if contact == nil {
			results[el.Index].Status, results[el.Index].Reason = StatusIgnored, ReasonContactDeleted
			continue
		}
		live = append(live, roundEvent{el, subjectOf(ev.UserID, deref(ev.UserEmail), contact)})
		props := ev.PropertiesJSON
		if props == nil {
			props = json.RawMessage(`{}`)
		}
		events = append(events, db.UserEvent{UserID: ev.UserID, Event: ev.Event, Properties: props,
			IdempotencyKey: ev.IdempotencyKey, Source: ptr("ingest"), OccurredAt: occurredAt(ev, now)})
		exits.add(d.Journeys.ExitingOn(ev.Event, ev.Properties), ev.UserID)
	}
	stored, err := db.InsertUserEvents(ctx, tx, events)
	if err != nil {
		return nil, nil, err
	}
	if slices.Contains(stored, false) {
		return nil, nil, errKeyRaced
	}
	exited, err := exits.apply(ctx, tx, now)
	return live, exited, err
}

// lockRound is liveSubject for a round: it locks the users' contacts and
// leaves out the erased ones.
func lockRound(ctx context.Context, tx bun.IDB, round []BatchElement, results []IngestOutput) ([]roundEvent, error) {
	users := make([]string, len(round))
	for i, el := range round {
		users[i] = el.Event.UserID
	}
	contacts, err := db.LockContactsByUser(ctx, tx, users)
	if err != nil {
		return nil, err
	}
	var live []roundEvent
	for _, el := range round {
		u, erased, _ := contactSubject(el.Event.UserID, deref(el.Event.UserEmail), contacts[el.Event.UserID], nil)
		if erased {
			results[el.Index].Status, results[el.Index].Reason = StatusIgnored, ReasonContactDeleted
			continue
		}
		live = append(live, roundEvent{el, u})
	}
	return live, nil
}

// evaluateRound is evaluateUser for the users of a round: it locks their
// active memberships of their candidate buckets in one statement, then
// evaluates each bucket for all the users it is a candidate for in one
// statement (db.EvaluateUsers, the set-based form of buckets.Evaluate) and
// joins and leaves them through the funnel.
func evaluateRound(ctx context.Context, tx bun.IDB, d *Deps, live []roundEvent, on map[int][]*buckets.Bucket, now time.Time) (Outcome, error) {
	var out Outcome
	byBucket := map[string][]roundEvent{}
	var pairUsers, pairBuckets []string
	for _, ev := range live {
		for _, b := range on[ev.Index] {
			byBucket[b.ID] = append(byBucket[b.ID], ev)
			pairUsers, pairBuckets = append(pairUsers, ev.UserID), append(pairBuckets, b.ID)
		}
	}
	rows, err := db.LockPairMemberships(ctx, tx, pairUsers, pairBuckets)
	if err != nil {
		return out, err
	}
	active := make(map[[2]string]db.Membership, len(rows))
	for _, m := range rows {
		active[[2]string{m.BucketID, m.UserID}] = m
	}
	for _, b := range d.Buckets.All() {
		evs := byBucket[b.ID]
		if len(evs) == 0 {
			continue
		}
		users := make([]string, len(evs))
		for i, ev := range evs {
			users[i] = ev.UserID
		}
		verdicts, err := db.EvaluateUsers(ctx, tx, b.Criteria, now, users)
		if err != nil {
			return out, fmt.Errorf("evaluating bucket %q: %w", b.ID, err)
		}
		var joiners []db.Joiner
		var leavers []db.Membership
		for _, ev := range evs {
			m, member := active[[2]string{b.ID, ev.UserID}]
			switch holds := verdicts[ev.UserID].Holds; {
			case holds && !member:
				joiners = append(joiners, db.Joiner{UserID: ev.UserID, Email: ev.Email})
			case !holds && member:
				leavers = append(leavers, m)
			}
		}
		joined, err := join(ctx, tx, d, b, joiners, joinSpec{Source: SourceEvent}, now)
		if err != nil {
			return out, fmt.Errorf("bucket %q: %w", b.ID, err)
		}
		out.add(joined)
		if len(leavers) > 0 {
			left, err := leave(ctx, tx, d, b, leavers, leaveSpec{Source: SourceEvent, Reason: ReasonCriteria}, now)
			if err != nil {
				return out, fmt.Errorf("bucket %q: %w", b.ID, err)
			}
			out.add(left)
		}
	}
	return out, nil
}
