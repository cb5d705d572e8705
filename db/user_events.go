package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
)

// UserEvent is a row of user_events: one event a user fired, or one
// transition the worker emitted.
type UserEvent struct {
	bun.BaseModel `bun:"table:user_events,alias:e"`

	ID             string          `bun:"id,pk,type:uuid,nullzero,default:gen_random_uuid()"`
	OrganizationID *string         `bun:"organization_id"`
	UserID         string          `bun:"user_id,notnull"`
	Event          string          `bun:"event,notnull"`
	Properties     json.RawMessage `bun:"properties,type:jsonb"`
	IdempotencyKey *string         `bun:"idempotency_key"`
	Source         *string         `bun:"source"`
	OccurredAt     time.Time       `bun:"occurred_at,notnull"`
	// ContactID is the user's live contact, written only where the table
	// has the column (Schema.EventContactID).
	ContactID *string `bun:"contact_id,type:uuid,scanonly"`
}

// CountUserEvents counts the user's events named event at or after since;
// a zero since counts them all.
func CountUserEvents(ctx context.Context, idb bun.IDB, userID, event string, since time.Time) (int64, error) {
	q := idb.NewSelect().TableExpr("user_events AS e").
		Where("e.user_id = ?", userID).
		Where("e.event = ?", event)
	if !since.IsZero() {
		q = q.Where("e.occurred_at >= ?", since)
	}
	n, err := q.Count(ctx)
	if err != nil {
		return 0, fmt.Errorf("counting %q events of user %q: %w", event, userID, err)
	}
	return int64(n), nil
}

// UserEventProperties returns the properties of the user's events named
// event at or after since (a zero since takes them all), one per event,
// decoded as contract §3.1 reads numbers; an event without properties has
// none.
func UserEventProperties(ctx context.Context, idb bun.IDB, userID, event string, since time.Time) ([]buckets.Properties, error) {
	q := idb.NewSelect().TableExpr("user_events AS e").
		Column("e.properties").
		Where("e.user_id = ?", userID).
		Where("e.event = ?", event)
	if !since.IsZero() {
		q = q.Where("e.occurred_at >= ?", since)
	}
	var docs []json.RawMessage
	if err := q.Scan(ctx, &docs); err != nil {
		return nil, fmt.Errorf("reading %q events of user %q: %w", event, userID, err)
	}
	out := make([]buckets.Properties, len(docs))
	for i, doc := range docs {
		out[i] = buckets.DecodeProperties(doc)
	}
	return out, nil
}

// Arrival is an ingested event to store, and what it brings to its
// user's contact: an email (when it has one) and properties merged over
// the contact's (top-level keys replace; nil leaves them as they are).
type Arrival struct {
	Event             UserEvent
	Email             *string
	ContactProperties json.RawMessage
}

// Arrived is what StoreEvents did with an arrival.
type Arrived struct {
	// Erased: the user is erased (their only contacts are soft-deleted);
	// nothing was written for the event.
	Erased bool
	// Duplicate: the event's idempotency key was stored before; nothing
	// was written for it, and its contact was not patched.
	Duplicate bool
	// Contact is the user's live contact as the arrival left it; nil when
	// Erased or Duplicate.
	Contact *Contact
	// Stored: the event was inserted. An arrival with a Contact that was
	// not stored had its key stored by another transaction after this
	// statement's snapshot: the transaction must be rolled back and run
	// again, and then finds it a Duplicate.
	Stored bool
}

// StoreEvents stores ingested events of distinct users with distinct
// keys, stamped now, in one statement: it leaves out those whose key is
// stored and those of erased users, applies each other one's patch to its
// user's live contact — creating it when the user has none, taking the
// contacts' row locks in user order, never reviving an erased user — and
// inserts the event, with its contact where the table has contact_id
// (Schema). It returns what it did with each, in order. The event ids are
// set here, time-ordered (NewID).
//
// In a database where a contact's email is unique (Schema), an email
// another live contact holds is not written: the contact keeps its own,
// or has none, rather than failing the ingest. Merging the two is the
// identity resolution of the application that owns them.
//
// One statement does what the key lookup, the contact upsert and the
// event insert did in three: each round trip to PostgreSQL costs both
// sides more CPU than most of an ingest's statements take to run
// (docs/performance.md, *Round trips of an ingest*).
func StoreEvents(ctx context.Context, idb bun.IDB, s Schema, arrivals []Arrival, now time.Time) ([]Arrived, error) {
	n := len(arrivals)
	if n == 0 {
		return nil, nil
	}
	users, emails, hasEmail, contactProps := make([]string, n), make([]string, n), make([]bool, n), make([]string, n)
	ids, events, props, keys, sources := make([]string, n), make([]string, n), make([]string, n), make([]*string, n), make([]*string, n)
	occurred := make([]string, n)
	for i, a := range arrivals {
		ev := a.Event
		users[i], contactProps[i], props[i] = ev.UserID, `{}`, `{}`
		if a.Email != nil {
			emails[i], hasEmail[i] = *a.Email, true
		}
		if len(a.ContactProperties) > 0 {
			contactProps[i] = string(a.ContactProperties)
		}
		if len(ev.Properties) > 0 {
			props[i] = string(ev.Properties)
		}
		ids[i], events[i], keys[i], sources[i] = NewID(), ev.Event, ev.IdempotencyKey, ev.Source
		occurred[i] = ev.OccurredAt.Format(time.RFC3339Nano)
	}
	emailFree := ""
	if s.UniqueContactEmail {
		emailFree = ` AND NOT EXISTS (SELECT 1 FROM contacts AS o
			WHERE lower(o.email) = lower(p.email) AND o.deleted_at IS NULL AND o.external_id IS DISTINCT FROM p.user_id)`
	}
	contactColumn, contactValue := "", ""
	if s.EventContactID {
		contactColumn, contactValue = ", contact_id", ", c.id"
	}
	// Whether a key is stored, and whether the user is live or erased, are
	// asked by scalar subqueries (an id, or none), not EXISTS: the
	// statement is prepared, and its one generic plan is made on the
	// tables as they are at the first ingest. On a new, empty contacts
	// table PostgreSQL made EXISTS a hashed subplan, which read every
	// contact at every run (1.3 ms an ingest by 2 000 contacts, and
	// growing); a scalar subquery is looked up by its index however small
	// the table was (docs/performance.md, *A plan made on an empty
	// table*). Every part reads the statement's snapshot: a key stored
	// after it is found by the insert's conflict, and erasures wait for
	// the users' locks the transaction took before (LockUsers).
	var rows []struct {
		Contact
		Erased    bool `bun:"erased"`
		Duplicate bool `bun:"duplicate"`
		Stored    bool `bun:"stored"`
	}
	err := queryParams(ctx, idb, &rows, `
		WITH p AS (
			SELECT p.*,
				(SELECT k.id FROM user_events AS k WHERE k.idempotency_key = p.key LIMIT 1) IS NOT NULL AS duplicate,
				(SELECT l.id FROM contacts AS l WHERE l.external_id = p.user_id AND l.deleted_at IS NULL LIMIT 1) IS NULL
					AND (SELECT d.id FROM contacts AS d WHERE d.external_id = p.user_id AND d.deleted_at IS NOT NULL LIMIT 1) IS NOT NULL AS erased
			FROM unnest($2::text[], $3::text[], $4::bool[], $5::text[], $6::uuid[], $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
				WITH ORDINALITY AS p(user_id, email, has_email, contact_properties, id, event, properties, key, source, occurred_at, n)
		), c AS (
			INSERT INTO contacts AS c (external_id, email, properties, first_seen_at, last_seen_at, created_at, updated_at)
			SELECT p.user_id, CASE WHEN p.has_email`+emailFree+` THEN p.email END, p.contact_properties::jsonb, $1::timestamptz, $1::timestamptz, $1::timestamptz, $1::timestamptz
			FROM p WHERE NOT p.duplicate AND NOT p.erased
			ORDER BY p.user_id
			ON CONFLICT (external_id) WHERE external_id IS NOT NULL AND deleted_at IS NULL DO UPDATE SET
				properties = CASE WHEN jsonb_typeof(c.properties) = 'object' THEN c.properties ELSE '{}' END || EXCLUDED.properties,
				email = coalesce(EXCLUDED.email, c.email),
				last_seen_at = EXCLUDED.last_seen_at,
				updated_at = EXCLUDED.updated_at
			RETURNING `+contactColumns+`
		), e AS (
			INSERT INTO user_events (id, user_id, event, properties, idempotency_key, source, occurred_at`+contactColumn+`)
			SELECT p.id, p.user_id, p.event, p.properties::jsonb, p.key, p.source, p.occurred_at`+contactValue+`
			FROM p JOIN c ON c.external_id = p.user_id
			ON CONFLICT (idempotency_key) DO NOTHING
			RETURNING id
		)
		SELECT `+contactColumns+`, p.erased, p.duplicate, e.id IS NOT NULL AS stored
		FROM p LEFT JOIN c ON c.external_id = p.user_id LEFT JOIN e ON e.id = p.id
		ORDER BY p.n`,
		now, textArray(users), textArray(emails), boolArray(hasEmail), textArray(contactProps),
		textArray(ids), textArray(events), textArray(props), optionalTextArray(keys), optionalTextArray(sources), textArray(occurred))
	if err != nil {
		return nil, fmt.Errorf("storing %d events, of user %q first: %w", n, users[0], err)
	}
	if len(rows) != n {
		return nil, fmt.Errorf("storing %d events: %d rows came back", n, len(rows))
	}
	out := make([]Arrived, n)
	for i := range rows {
		r := &rows[i]
		out[i] = Arrived{Erased: r.Erased, Duplicate: r.Duplicate, Stored: r.Stored}
		if r.Contact.ID != "" {
			out[i].Contact = &r.Contact
		}
	}
	return out, nil
}

// Emissions are the events of a batch of transitions of one kind: of one
// bucket, one transition, from one source, for one reason (contract §5.1),
// or the fires of its dwell schedules (§14).
type Emissions struct {
	BucketID   string
	BucketName string
	Transition string
	Source     string
	// Reason is why the members left; empty for joins and dwell fires.
	Reason string
	Events []Emission
}

// Emission is one event of a transition: the bucket's own
// bucket:<transition>:<id>, the generic bucket:<transition>, or a dwell
// fire's bucket:dwell:<id>:<label>.
type Emission struct {
	Event          string
	IdempotencyKey string
	UserID         string
	UserEmail      string
	EntryCount     int
	// DwellCount is a dwell fire's ordinal; zero for a join or a leave.
	DwellCount int
}

// Properties are the properties of the event e of the batch as
// InsertEmissions stores them, for matching in Go (a journey's exitOn
// where).
func (b Emissions) Properties(e Emission) map[string]any {
	props := map[string]any{
		"bucketId":   b.BucketID,
		"bucketName": b.BucketName,
		"userId":     e.UserID,
		"transition": b.Transition,
		"source":     b.Source,
		"entryCount": e.EntryCount,
	}
	if b.Reason != "" {
		props["reason"] = b.Reason
	}
	if e.DwellCount > 0 {
		props["dwellCount"] = e.DwellCount
	}
	return props
}

// InsertEmissions stores each transition event in user_events (source
// 'bucket', occurred now, a time-ordered id, and the user's live contact
// where the table has contact_id) and its push in the outbox, in one
// statement, and returns the keys it stored. An event whose key is already
// stored was emitted before: neither it nor its push is written again
// (contract §5.2).
//
// The statement builds each event's properties (Emissions.Properties) and
// its push, payload {userId, userEmail, properties} and metadata {bucketId,
// userId, transition, idempotencyKey}, from the batch's values and one
// array per varying field: sending them as JSON documents made Postgres
// parse 30 000 of them per 10 000 transitions.
func InsertEmissions(ctx context.Context, idb bun.IDB, s Schema, b Emissions, now time.Time) (map[string]bool, error) {
	stored := map[string]bool{}
	n := len(b.Events)
	if n == 0 {
		return stored, nil
	}
	ids, events, keys, users, emails := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	counts, dwellCounts := make([]int, n), make([]int, n)
	for i, e := range b.Events {
		ids[i], events[i], keys[i], users[i], emails[i] = NewID(), e.Event, e.IdempotencyKey, e.UserID, e.UserEmail
		counts[i], dwellCounts[i] = e.EntryCount, e.DwellCount
	}
	contactColumn, contactValue := "", ""
	if s.EventContactID {
		contactColumn, contactValue = ", contact_id", ", "+liveContactOf("x.user_id")
	}
	var inserted []string
	err := queryParams(ctx, idb, &inserted, `
		WITH x AS (
			SELECT x.*, jsonb_build_object(
					'bucketId', $2::text, 'bucketName', $3::text, 'userId', x.user_id,
					'transition', $4::text, 'source', $5::text, 'entryCount', x.entry_count
				) || CASE WHEN $6::text = '' THEN '{}' ELSE jsonb_build_object('reason', $6::text) END
				|| CASE WHEN x.dwell_count > 0 THEN jsonb_build_object('dwellCount', x.dwell_count) ELSE '{}' END AS properties
			FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::int[], $12::int[], $13::uuid[])
				AS x(event, key, user_id, email, entry_count, dwell_count, id)
		), stored AS (
			INSERT INTO user_events (id, user_id, event, properties, idempotency_key, source, occurred_at`+contactColumn+`)
			SELECT id, user_id, event, properties, key, 'bucket', $1::timestamptz`+contactValue+` FROM x
			ON CONFLICT (idempotency_key) DO NOTHING
			RETURNING idempotency_key
		)
		INSERT INTO bucket_event_outbox (event_key, payload, additional_metadata, idempotency_key, created_at, available_at)
		SELECT x.event,
			jsonb_build_object('userId', x.user_id, 'userEmail', x.email, 'properties', x.properties),
			jsonb_build_object('bucketId', $2::text, 'userId', x.user_id, 'transition', $4::text, 'idempotencyKey', x.key),
			x.key, $1::timestamptz, $1::timestamptz
		FROM x JOIN stored ON stored.idempotency_key = x.key
		ON CONFLICT DO NOTHING
		RETURNING idempotency_key`,
		now, b.BucketID, b.BucketName, b.Transition, b.Source, b.Reason,
		textArray(events), textArray(keys), textArray(users), textArray(emails), intArray(counts),
		intArray(dwellCounts), textArray(ids))
	if err != nil {
		return nil, fmt.Errorf("storing %d transition events: %w", n, err)
	}
	for _, k := range inserted {
		stored[k] = true
	}
	return stored, nil
}

// TransitionEvent is a transition event of a user with the state of its push.
type TransitionEvent struct {
	UserEvent  `bun:",extend"`
	Dispatched bool `bun:"dispatched"`
}

// UserTransitions returns the user's transition events (generic ones too),
// oldest first, optionally of one bucket, each with whether its push went
// out.
func UserTransitions(ctx context.Context, idb bun.IDB, userID, bucketID string) ([]TransitionEvent, error) {
	var rows []TransitionEvent
	q := idb.NewSelect().Model(&rows).
		ColumnExpr("e.*").
		ColumnExpr("coalesce(o.dispatched_at IS NOT NULL, false) AS dispatched").
		Join("LEFT JOIN bucket_event_outbox AS o ON o.idempotency_key = e.idempotency_key").
		Where("e.user_id = ? AND e.source = 'bucket'", userID).
		OrderExpr("e.occurred_at, e.idempotency_key")
	if bucketID != "" {
		q = q.Where("e.properties ->> 'bucketId' = ?", bucketID)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading the transitions of user %q: %w", userID, err)
	}
	return rows, nil
}

// LatestUserEvent returns when the user last fired the event, or nil.
func LatestUserEvent(ctx context.Context, idb bun.IDB, userID, event string) (*time.Time, error) {
	var at []time.Time
	err := idb.NewSelect().TableExpr("user_events AS e").ColumnExpr("e.occurred_at").
		Where("e.user_id = ? AND e.event = ?", userID, event).
		OrderExpr("e.occurred_at DESC").Limit(1).
		Scan(ctx, &at)
	if err != nil {
		return nil, fmt.Errorf("reading the latest %q event of user %q: %w", event, userID, err)
	}
	if len(at) == 0 {
		return nil, nil
	}
	return &at[0], nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
