package db

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/buckets"
)

// Contact is a row of contacts. ExternalID is the user key.
type Contact struct {
	bun.BaseModel `bun:"table:contacts,alias:c"`

	ID             string          `bun:"id,pk,type:uuid,nullzero,default:gen_random_uuid()"`
	OrganizationID *string         `bun:"organization_id"`
	ExternalID     *string         `bun:"external_id"`
	Email          *string         `bun:"email"`
	Properties     json.RawMessage `bun:"properties,type:jsonb"`
	Timezone       *string         `bun:"timezone"`
	FirstSeenAt    time.Time       `bun:"first_seen_at,nullzero,notnull,default:now()"`
	LastSeenAt     time.Time       `bun:"last_seen_at,nullzero,notnull,default:now()"`
	DeletedAt      *time.Time      `bun:"deleted_at"`
	CreatedAt      time.Time       `bun:"created_at,nullzero,notnull,default:now()"`
	UpdatedAt      time.Time       `bun:"updated_at,nullzero,notnull,default:now()"`
}

// contactColumns are the columns of Contact, named: a statement the
// connection prepares returns what it returned when it was prepared (see
// preparingConn), and contacts may gain columns.
const contactColumns = "c.id, c.organization_id, c.external_id, c.email, c.properties, c.timezone, " +
	"c.first_seen_at, c.last_seen_at, c.deleted_at, c.created_at, c.updated_at"

// PropertyMap decodes the contact's properties as Hogsend reads them
// (buckets.DecodeProperties): a number beyond the double range is ±Inf and
// hides nothing else. Anything but a JSON object reads as no properties.
func (c *Contact) PropertyMap() buckets.Properties {
	return buckets.DecodeProperties(c.Properties)
}

// ContactByUser returns the user's contact, soft-deleted or not (the live
// one first), or nil when the user has none.
func ContactByUser(ctx context.Context, idb bun.IDB, userID string) (*Contact, error) {
	return contactByUser(ctx, idb, userID, false)
}

// LockContactByUser is ContactByUser that also locks the user's contacts
// until the transaction ends: the per-user lock of an evaluation that does
// not write the contact itself (contract §5.3).
func LockContactByUser(ctx context.Context, idb bun.IDB, userID string) (*Contact, error) {
	return contactByUser(ctx, idb, userID, true)
}

func contactByUser(ctx context.Context, idb bun.IDB, userID string, lock bool) (*Contact, error) {
	var rows []Contact
	q := idb.NewSelect().Model(&rows).
		Where("c.external_id = ?", userID).
		OrderExpr("c.deleted_at IS NOT NULL, c.updated_at DESC").
		Limit(1)
	if lock {
		q = q.For("NO KEY UPDATE")
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading the contact of user %q: %w", userID, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	return &rows[0], nil
}

// LockContacts takes a shared lock on the live contacts of the users, in
// contacts.id order, until the transaction ends. A join chosen outside the
// joining transaction (the sweep's join pass, a backfill) takes it before
// it re-checks the criteria: an ingest holds the contact's row lock from
// its upsert to its commit, so the re-check sees what the ingest stored
// (contract §5.3).
func LockContacts(ctx context.Context, idb bun.IDB, userIDs []string) error {
	if len(userIDs) == 0 {
		return nil
	}
	_, err := idb.NewSelect().TableExpr("contacts AS c").ColumnExpr("1").
		Where("c.external_id = ANY(?) AND c.deleted_at IS NULL", pgdialect.Array(userIDs)).
		OrderExpr("c.id").
		For("SHARE").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("locking the contacts of %d users: %w", len(userIDs), err)
	}
	return nil
}

// The per-user lock (contract §5.3): every path that can create a contact
// or a membership — ingest, the sweep's joins, a backfill's — takes the
// lock of its users shared, before anything else in its transaction, and
// an erasure (EraseUser) takes the user's lock exclusively. So an erasure
// waits for the writers of the user to commit, and they wait for it: none
// can revive or join a user erased meanwhile, nor leave the erasure
// without the rows it wrote. Leaves need none of it: an erasure updates
// the membership rows every leave locks. The users are spread over
// userLockStripes advisory locks, so a round of a thousand users takes at
// most that many, and an erasure holds up a stripe's writers for the few
// milliseconds it takes.
const (
	userLockSpace   int32 = 0x62776b75 // the first key of the two-key advisory locks: the worker's users
	userLockStripes       = 128
)

// userStripe is the advisory lock of the user, by an FNV hash of the id.
func userStripe(userID string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(userID))
	return int32(h.Sum32() % userLockStripes)
}

// LockUsers takes the users' locks shared until the transaction ends, in
// stripe order (see userLockStripes).
func LockUsers(ctx context.Context, idb bun.IDB, userIDs []string) error {
	if len(userIDs) == 0 {
		return nil
	}
	stripes := make([]int32, 0, len(userIDs))
	for _, u := range userIDs {
		stripes = append(stripes, userStripe(u))
	}
	slices.Sort(stripes)
	stripes = slices.Compact(stripes)
	err := execParams(ctx, idb, "SELECT pg_advisory_xact_lock_shared($1::int, s) FROM unnest($2::int[]) AS s",
		userLockSpace, intArray(stripes))
	if err != nil {
		return fmt.Errorf("locking %d users: %w", len(userIDs), err)
	}
	return nil
}

// Candidate is a contact the join pass of the sweep may enrol.
type Candidate struct {
	ContactID string  `bun:"id"`
	UserID    string  `bun:"external_id"`
	Email     *string `bun:"email"`
}

// JoinCandidates returns, in user key order, the live contacts with a
// user key that are not active members of the bucket and for whom the
// criteria hold at now with their properties. When everFired names events,
// a candidate must also have fired at least one of them (the everFired
// floor of contract §6.3). It is one set-based query: paging it would walk
// every contact in that order, probing each, at twice the cost.
//
// The order is deterministic, as §6.3 asks, and it is the user key's
// rather than contacts.id's: every index a join writes (memberships by
// user, user_events by user and by idempotency key, which begins with the
// bucket and the user) is keyed by it, so consecutive batches write
// neighbouring index pages, where a random uuid order made each row of a
// batch touch a page of its own. In contacts.id order a backfill of
// 700 000 joiners took 1.8× one INSERT … SELECT of the same rows; in this
// order it takes 1.0× (docs/performance.md).
func JoinCandidates(ctx context.Context, idb bun.IDB, b *buckets.Bucket, now time.Time, everFired []string) ([]Candidate, error) {
	pred := CompileCriteria(b.Criteria, now, Subject{UserID: "c.external_id", Properties: "c.properties"})
	q := idb.NewSelect().TableExpr("contacts AS c").
		Column("c.id", "c.external_id", "c.email").
		Where("c.deleted_at IS NULL AND c.external_id IS NOT NULL")
	if len(everFired) > 0 {
		q = q.Where("EXISTS (SELECT 1 FROM user_events AS f WHERE f.user_id = c.external_id AND f.event = ANY(?))",
			pgdialect.Array(everFired))
	}
	q = q.Where("NOT EXISTS (SELECT 1 FROM bucket_memberships AS m WHERE m.user_id = c.external_id "+
		"AND m.bucket_id = ? AND m.status = 'active' AND m.deleted_at IS NULL)", b.ID).
		Where(pred.SQL, pred.Args...)
	var rows []Candidate
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("selecting join candidates of bucket %q: %w", b.ID, err)
	}
	// Sorted here, not by ORDER BY, which makes the planner walk contacts
	// in an index's order with a heap fetch each: 12 s instead of 4 s over
	// a million contacts. Byte order: the indexes' own under a C collation,
	// and close to it under any other.
	slices.SortFunc(rows, func(a, b Candidate) int { return strings.Compare(a.UserID, b.UserID) })
	return rows, nil
}

// ContactsByUser is ContactByUser for many users in one statement: each
// user's contact (the live one first), or none.
func ContactsByUser(ctx context.Context, idb bun.IDB, userIDs []string) (map[string]*Contact, error) {
	return contactsByUser(ctx, idb, userIDs, false)
}

// LockContactsByUser is ContactsByUser that locks, in user order, as
// LockContactByUser does.
func LockContactsByUser(ctx context.Context, idb bun.IDB, userIDs []string) (map[string]*Contact, error) {
	return contactsByUser(ctx, idb, userIDs, true)
}

func contactsByUser(ctx context.Context, idb bun.IDB, userIDs []string, lock bool) (map[string]*Contact, error) {
	out := make(map[string]*Contact, len(userIDs))
	if len(userIDs) == 0 {
		return out, nil
	}
	var rows []Contact
	q := idb.NewSelect().Model(&rows).
		Where("c.external_id = ANY(?)", pgdialect.Array(userIDs)).
		OrderExpr("c.external_id, c.deleted_at IS NOT NULL, c.updated_at DESC")
	if lock {
		q = q.For("NO KEY UPDATE")
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading the contacts of %d users: %w", len(userIDs), err)
	}
	for i := range rows {
		if _, seen := out[*rows[i].ExternalID]; !seen {
			out[*rows[i].ExternalID] = &rows[i]
		}
	}
	return out, nil
}

// Erased counts what EraseUser soft-deleted.
type Erased struct {
	Contacts    int `json:"contacts"`
	Memberships int `json:"memberships"`
}

// EraseUser soft-deletes the user's contacts and memberships, leaving a
// soft-deleted contact behind even for a user who had none, so that every
// path from then on treats the user as erased. It emits nothing. It first
// takes the user's lock exclusively (see LockUsers): the writers that hold
// it have committed when its statements run, each of which then sees
// them, and none starts until the erasure has committed and can be seen.
func EraseUser(ctx context.Context, idb bun.IDB, userID string, now time.Time) (Erased, error) {
	var e Erased
	if _, err := idb.NewRaw("SELECT pg_advisory_xact_lock(?, ?)", userLockSpace, userStripe(userID)).Exec(ctx); err != nil {
		return e, fmt.Errorf("locking user %q: %w", userID, err)
	}
	res, err := idb.NewUpdate().TableExpr("contacts AS c").
		Set("deleted_at = ?", now).Set("updated_at = ?", now).
		Where("c.external_id = ? AND c.deleted_at IS NULL", userID).
		Exec(ctx)
	if err != nil {
		return e, fmt.Errorf("erasing the contact of user %q: %w", userID, err)
	}
	n, _ := res.RowsAffected()
	e.Contacts = int(n)
	_, err = idb.NewRaw(`
		INSERT INTO contacts (external_id, properties, deleted_at, first_seen_at, last_seen_at, created_at, updated_at)
		SELECT ?0, '{}', ?1, ?1, ?1, ?1, ?1
		WHERE NOT EXISTS (SELECT 1 FROM contacts WHERE external_id = ?0)`, userID, now).Exec(ctx)
	if err != nil {
		return e, fmt.Errorf("recording the erasure of user %q: %w", userID, err)
	}
	res, err = idb.NewUpdate().TableExpr("bucket_memberships AS m").
		Set("deleted_at = ?", now).Set("updated_at = ?", now).
		Where("m.user_id = ? AND m.deleted_at IS NULL", userID).
		Exec(ctx)
	if err != nil {
		return e, fmt.Errorf("erasing the memberships of user %q: %w", userID, err)
	}
	n, _ = res.RowsAffected()
	e.Memberships = int(n)
	return e, nil
}

// EvaluateUsers evaluates the criteria at now for each user in one
// statement — the set-based form of buckets.Evaluate, which the
// conformance suite holds it to — with the live contact's properties (none
// for a user without one), and returns which users they hold for. The
// contact is read only when the criteria have a property leg.
func EvaluateUsers(ctx context.Context, idb bun.IDB, criteria buckets.Condition, now time.Time, userIDs []string) (map[string]bool, error) {
	pred := CompileCriteria(criteria, now, Subject{UserID: "u.user_id", Properties: "c.properties"})
	q := idb.NewSelect().
		TableExpr("unnest(?::text[]) AS u(user_id)", pgdialect.Array(userIDs)).
		ColumnExpr("u.user_id").
		ColumnExpr(pred.SQL+" AS holds", pred.Args...)
	if pred.ReadsProperties {
		q = q.Join("LEFT JOIN contacts AS c ON c.external_id = u.user_id AND c.deleted_at IS NULL")
	}
	var rows []struct {
		UserID string `bun:"user_id"`
		Holds  bool   `bun:"holds"`
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("evaluating %d users: %w", len(userIDs), err)
	}
	out := make(map[string]bool, len(rows))
	for _, r := range rows {
		out[r.UserID] = r.Holds
	}
	return out, nil
}

// ErasedUsers returns which of the users are erased: their only contacts
// are soft-deleted.
func ErasedUsers(ctx context.Context, idb bun.IDB, userIDs []string) (map[string]bool, error) {
	var erased []string
	err := idb.NewSelect().TableExpr("contacts AS d").
		ColumnExpr("DISTINCT d.external_id").
		Where("d.external_id = ANY(?) AND d.deleted_at IS NOT NULL", pgdialect.Array(userIDs)).
		Where("NOT EXISTS (SELECT 1 FROM contacts AS c WHERE c.external_id = d.external_id AND c.deleted_at IS NULL)").
		Scan(ctx, &erased)
	if err != nil {
		return nil, fmt.Errorf("looking for erased users among %d: %w", len(userIDs), err)
	}
	out := make(map[string]bool, len(erased))
	for _, u := range erased {
		out[u] = true
	}
	return out, nil
}
