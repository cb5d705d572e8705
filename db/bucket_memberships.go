package db

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/buckets"
)

// Membership statuses.
const (
	StatusActive = "active"
	StatusLeft   = "left"
)

// Membership is a row of bucket_memberships: one stay of a user in a bucket.
// EntryCount is the epoch: 1 + the number of earlier rows of the pair.
type Membership struct {
	bun.BaseModel `bun:"table:bucket_memberships,alias:m"`

	ID              string          `bun:"id,pk,type:uuid,nullzero,default:gen_random_uuid()"`
	OrganizationID  *string         `bun:"organization_id"`
	UserID          string          `bun:"user_id,notnull"`
	UserEmail       *string         `bun:"user_email"`
	BucketID        string          `bun:"bucket_id,notnull"`
	Status          string          `bun:"status,nullzero,notnull"`
	EnteredAt       time.Time       `bun:"entered_at,nullzero,notnull,default:now()"`
	LeftAt          *time.Time      `bun:"left_at"`
	ExpiresAt       *time.Time      `bun:"expires_at"`
	MaxDwellAt      *time.Time      `bun:"max_dwell_at"`
	LastEvaluatedAt *time.Time      `bun:"last_evaluated_at"`
	EntryCount      int             `bun:"entry_count,nullzero,notnull"`
	Source          *string         `bun:"source"`
	Context         json.RawMessage `bun:"context,type:jsonb"`
	// DwellState holds, per dwell schedule label, when the membership
	// last fired it (contract §14).
	DwellState json.RawMessage `bun:"dwell_state,type:jsonb,nullzero"`
	// DwellAnchorAt, when set, is when the membership began by its
	// criteria: the clock of its dwell schedules in place of EnteredAt.
	DwellAnchorAt *time.Time `bun:"dwell_anchor_at"`
	DeletedAt     *time.Time `bun:"deleted_at"`
	CreatedAt     time.Time  `bun:"created_at,nullzero,notnull,default:now()"`
	UpdatedAt     time.Time  `bun:"updated_at,nullzero,notnull,default:now()"`
}

// DwellClock is when the membership's dwell schedules count from
// (contract §14): DwellAnchorAt when a backfill dated it, else EnteredAt.
func (m Membership) DwellClock() time.Time {
	if m.DwellAnchorAt != nil {
		return *m.DwellAnchorAt
	}
	return m.EnteredAt
}

// DwellStamps returns when the membership last fired each dwell schedule,
// by label; a stamp that is not an instant is left out.
func (m Membership) DwellStamps() map[string]time.Time {
	var raw map[string]any
	_ = json.Unmarshal(m.DwellState, &raw) // NULL or not an object: no stamps
	out := map[string]time.Time{}
	for label, v := range raw {
		if s, ok := v.(string); ok {
			if at, err := time.Parse(time.RFC3339Nano, s); err == nil {
				out[label] = at
			}
		}
	}
	return out
}

// MembershipFilter narrows ListMemberships.
type MembershipFilter struct {
	BucketID string
	UserID   string
	Status   string // "" for any status
	Limit    int    // 0 for no limit
}

// ListMemberships returns the memberships matching f that are not
// soft-deleted, newest first.
func ListMemberships(ctx context.Context, idb bun.IDB, f MembershipFilter) ([]Membership, error) {
	var rows []Membership
	q := idb.NewSelect().Model(&rows).Where("m.deleted_at IS NULL")
	if f.BucketID != "" {
		q = q.Where("m.bucket_id = ?", f.BucketID)
	}
	if f.UserID != "" {
		q = q.Where("m.user_id = ?", f.UserID)
	}
	if f.Status != "" {
		q = q.Where("m.status = ?", f.Status)
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit))
	}
	if err := q.OrderExpr("m.entered_at DESC, m.entry_count DESC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("listing memberships: %w", err)
	}
	return rows, nil
}

// BucketStats counts a bucket's memberships.
type BucketStats struct {
	BucketID string `bun:"bucket_id"`
	Size     int64  `bun:"size"`    // active members now
	Entered  int64  `bun:"entered"` // memberships ever started
	Left     int64  `bun:"left"`    // memberships ended
}

// MembershipStats counts the memberships of every bucket that has any,
// keyed by bucket id.
func MembershipStats(ctx context.Context, idb bun.IDB) (map[string]BucketStats, error) {
	var rows []BucketStats
	err := idb.NewSelect().TableExpr("bucket_memberships AS m").
		ColumnExpr("m.bucket_id").
		ColumnExpr("count(*) FILTER (WHERE m.status = 'active') AS size").
		ColumnExpr("count(*) AS entered").
		ColumnExpr("count(*) FILTER (WHERE m.status = 'left') AS left").
		Where("m.deleted_at IS NULL").
		GroupExpr("m.bucket_id").
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("counting memberships: %w", err)
	}
	stats := make(map[string]BucketStats, len(rows))
	for _, r := range rows {
		stats[r.BucketID] = r
	}
	return stats, nil
}

// CountMembers counts the active members of each of the buckets, through
// the partial index of the active rows (an index-only scan once the table
// is vacuumed); a bucket with none is absent.
func CountMembers(ctx context.Context, idb bun.IDB, bucketIDs []string) (map[string]int, error) {
	var rows []struct {
		BucketID string `bun:"bucket_id"`
		Size     int    `bun:"size"`
	}
	err := idb.NewSelect().TableExpr("bucket_memberships AS m").
		ColumnExpr("m.bucket_id, count(*) AS size").
		Where("m.bucket_id IN (?)", bun.In(bucketIDs)).
		Where("m.status = 'active' AND m.deleted_at IS NULL").
		GroupExpr("m.bucket_id").
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("counting the members of %d buckets: %w", len(bucketIDs), err)
	}
	sizes := make(map[string]int, len(rows))
	for _, r := range rows {
		sizes[r.BucketID] = r.Size
	}
	return sizes, nil
}

// Trend is a bucket's membership over time (contract §16): its size now,
// the memberships it ever started and ended, their average dwell, and a
// series of periods.
type Trend struct {
	BucketID string
	Size     int
	Entered  int
	Left     int
	// AvgDwellSecs is Hogsend's: now − entered_at for an active
	// membership, left_at − entered_at for one that ended; nil with none.
	AvgDwellSecs *float64
	Series       []TrendPoint
}

// TrendPoint is one period of a trend: the memberships that started and
// ended in it, and the size at its end (at now for the current period).
type TrendPoint struct {
	At      time.Time
	Entered int
	Left    int
	Size    int
}

// Trends reads the trend of each bucket from its membership rows, with a
// period of unit ("hour", "day" or "week", in UTC) from the period that
// holds since to the one that holds now. An erased user's rows count
// nowhere. It reads each row once: the sizes are the size at since plus
// the joins and leaves after it.
func Trends(ctx context.Context, idb bun.IDB, bucketIDs []string, unit string, since, now time.Time) ([]Trend, error) {
	var totals []struct {
		BucketID     string   `bun:"bucket_id"`
		Size         int      `bun:"size"`
		Entered      int      `bun:"entered"`
		Left         int      `bun:"left"`
		AvgDwellSecs *float64 `bun:"avg_dwell_secs"`
		Before       int      `bun:"before"`
	}
	start, err := periodStart(ctx, idb, unit, since)
	if err != nil {
		return nil, err
	}
	err = idb.NewSelect().TableExpr("bucket_memberships AS m").
		ColumnExpr("m.bucket_id").
		ColumnExpr("count(*) FILTER (WHERE m.status = 'active') AS size").
		ColumnExpr("count(*) AS entered").
		ColumnExpr("count(*) FILTER (WHERE m.status = 'left') AS left").
		ColumnExpr("avg(extract(epoch FROM CASE WHEN m.status = 'left' THEN m.left_at ELSE ?::timestamptz END - m.entered_at))::float8 AS avg_dwell_secs", now).
		ColumnExpr("count(*) FILTER (WHERE m.entered_at < ?0 AND (m.left_at IS NULL OR m.left_at >= ?0)) AS before", start).
		Where("m.bucket_id IN (?)", bun.In(bucketIDs)).
		Where("m.deleted_at IS NULL").
		GroupExpr("m.bucket_id").
		Scan(ctx, &totals)
	if err != nil {
		return nil, fmt.Errorf("reading the membership totals: %w", err)
	}
	var moves []struct {
		BucketID string    `bun:"bucket_id"`
		At       time.Time `bun:"at"`
		Entered  int       `bun:"entered"`
		Left     int       `bun:"left"`
	}
	err = idb.NewRaw(`
		SELECT bucket_id, at, count(*) FILTER (WHERE kind = 'e') AS entered, count(*) FILTER (WHERE kind = 'l') AS left
		FROM (
			SELECT m.bucket_id, date_trunc(?0, m.entered_at, 'UTC') AS at, 'e' AS kind
			FROM bucket_memberships AS m
			WHERE m.bucket_id IN (?1) AND m.deleted_at IS NULL AND m.entered_at >= ?2 AND m.entered_at <= ?3
			UNION ALL
			SELECT m.bucket_id, date_trunc(?0, m.left_at, 'UTC'), 'l'
			FROM bucket_memberships AS m
			WHERE m.bucket_id IN (?1) AND m.deleted_at IS NULL AND m.left_at >= ?2 AND m.left_at <= ?3
		) AS moves
		GROUP BY bucket_id, at`, unit, bun.In(bucketIDs), start, now).Scan(ctx, &moves)
	if err != nil {
		return nil, fmt.Errorf("reading the joins and leaves by %s: %w", unit, err)
	}
	type key struct {
		bucket string
		at     int64
	}
	byPeriod := map[key][2]int{}
	for _, m := range moves {
		byPeriod[key{m.BucketID, m.At.Unix()}] = [2]int{m.Entered, m.Left}
	}
	found := map[string]int{}
	for i, t := range totals {
		found[t.BucketID] = i
	}
	out := make([]Trend, len(bucketIDs))
	for i, id := range bucketIDs {
		out[i] = Trend{BucketID: id}
		size := 0
		if j, ok := found[id]; ok {
			t := totals[j]
			out[i].Size, out[i].Entered, out[i].Left, out[i].AvgDwellSecs = t.Size, t.Entered, t.Left, t.AvgDwellSecs
			size = t.Before
		}
		for at := start; !at.After(now); at = nextPeriod(at, unit) {
			moved := byPeriod[key{id, at.Unix()}]
			size += moved[0] - moved[1]
			out[i].Series = append(out[i].Series, TrendPoint{At: at, Entered: moved[0], Left: moved[1], Size: size})
		}
	}
	return out, nil
}

// periodStart is the start of the period of unit that holds at, in UTC.
func periodStart(ctx context.Context, idb bun.IDB, unit string, at time.Time) (time.Time, error) {
	var start time.Time
	if err := idb.NewRaw("SELECT date_trunc(?, ?::timestamptz, 'UTC')", unit, at).Scan(ctx, &start); err != nil {
		return start, fmt.Errorf("the %s that holds %s: %w", unit, at.Format(time.RFC3339), err)
	}
	return start.UTC(), nil
}

// nextPeriod is the start of the period after the one that starts at at.
func nextPeriod(at time.Time, unit string) time.Time {
	switch unit {
	case "hour":
		return at.Add(time.Hour)
	case "week":
		return at.AddDate(0, 0, 7)
	}
	return at.AddDate(0, 0, 1)
}

// membersOf is the alias list of the sweeps' member scans: m is the
// membership, c the user's live contact (absent for a user with none).
const membersOf = "bucket_memberships AS m LEFT JOIN contacts AS c ON c.external_id = m.user_id AND c.deleted_at IS NULL"

// liveMember keeps the active, undeleted memberships of live users: users
// with a live contact, or with no contact at all. A user whose only
// contacts are soft-deleted is erased and never transitions (contract §5.3);
// contacts_deleted_external_id_idx answers that test.
const liveMember = "m.status = 'active' AND m.deleted_at IS NULL AND " +
	"(c.id IS NOT NULL OR NOT EXISTS (SELECT 1 FROM contacts AS d WHERE d.external_id = m.user_id AND d.deleted_at IS NOT NULL))"

// memberSubject evaluates criteria over a membership scan.
var memberSubject = Subject{UserID: "m.user_id", Properties: "c.properties"}

// membershipSubject evaluates criteria in a statement on bucket_memberships
// alone (an UPDATE of memberships), reading the live contact's properties.
var membershipSubject = Subject{
	UserID:     "m.user_id",
	Properties: "(SELECT c.properties FROM contacts AS c WHERE c.external_id = m.user_id AND c.deleted_at IS NULL)",
}

// CriteriaLeavers returns the bucket's active members, live users only,
// for whom the criteria no longer hold at now, in row id order. It is the
// SHOULD-LEAVE query of the sweep: the comparison runs in SQL.
func CriteriaLeavers(ctx context.Context, idb bun.IDB, b *buckets.Bucket, now time.Time) ([]Membership, error) {
	pred := CompileNegation(b.Criteria, now, memberSubject)
	return scanMembers(ctx, idb, b.ID, pred.SQL, pred.Args)
}

// DwellExpired returns the bucket's active members, live users only, whose
// max_dwell_at has come (contract §6.2 step 3).
func DwellExpired(ctx context.Context, idb bun.IDB, bucketID string, now time.Time) ([]Membership, error) {
	return scanMembers(ctx, idb, bucketID, "m.max_dwell_at <= ?", []any{now})
}

// DeferredLeavers returns the bucket's active members, live users only,
// whose deferred leave is due — expires_at has come and minDwell has passed
// — and for whom the criteria no longer hold (contract §6.2 step 4).
func DeferredLeavers(ctx context.Context, idb bun.IDB, b *buckets.Bucket, now time.Time) ([]Membership, error) {
	pred := CompileNegation(b.Criteria, now, memberSubject)
	where := "m.expires_at <= ? AND m.entered_at <= ? AND " + pred.SQL
	args := append([]any{now, now.Add(-b.MinDwell.Std())}, pred.Args...)
	return scanMembers(ctx, idb, b.ID, where, args)
}

func scanMembers(ctx context.Context, idb bun.IDB, bucketID, where string, args []any) ([]Membership, error) {
	var rows []Membership
	err := idb.NewSelect().TableExpr(membersOf).
		Column("m.id", "m.user_id", "m.user_email", "m.entered_at", "m.entry_count", "m.expires_at").
		Where("m.bucket_id = ?", bucketID).
		Where(liveMember).
		Where(where, args...).
		OrderExpr("m.id").
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("selecting members of bucket %q: %w", bucketID, err)
	}
	return rows, nil
}

// EvaluatedMember is a member of a per-member evaluation batch, with the
// verdict of the criteria for it.
type EvaluatedMember struct {
	Membership `bun:",extend"`
	Holds      bool `bun:"holds"`
}

// EvaluateMembers takes the next batch of at most limit active members of
// the bucket, live users only, not yet evaluated at now (last_evaluated_at
// NULL or earlier, oldest first), evaluates the criteria for each with its
// contact's properties, and stamps last_evaluated_at = now. Rows locked by
// a concurrent sweep are skipped.
func EvaluateMembers(ctx context.Context, idb bun.IDB, b *buckets.Bucket, now time.Time, limit int) ([]EvaluatedMember, error) {
	pred := CompileCriteria(b.Criteria, now, memberSubject)
	batch := idb.NewSelect().TableExpr(membersOf).
		Column("m.id", "m.user_id", "m.user_email", "m.entered_at", "m.entry_count", "m.expires_at").
		ColumnExpr(pred.SQL+" AS holds", pred.Args...).
		Where("m.bucket_id = ?", b.ID).
		Where(liveMember).
		Where("(m.last_evaluated_at IS NULL OR m.last_evaluated_at < ?)", now).
		OrderExpr("m.last_evaluated_at ASC NULLS FIRST, m.id").
		Limit(int64(limit)).
		For("UPDATE OF m SKIP LOCKED")
	var rows []EvaluatedMember
	err := idb.NewUpdate().With("batch", batch).
		TableExpr("bucket_memberships AS m").
		TableExpr("batch").
		Set("last_evaluated_at = ?", now).
		Where("m.id = batch.id").
		Returning("batch.*").
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("evaluating members of bucket %q: %w", b.ID, err)
	}
	return rows, nil
}

// Joiner is a user to insert as a new member.
type Joiner struct {
	UserID string
	Email  string // "" when unknown
}

// NewMemberships describes the rows of a join (contract §5.4).
type NewMemberships struct {
	BucketID   string
	Source     string
	Now        time.Time
	ExpiresAt  *time.Time
	MaxDwellAt *time.Time
	Users      []Joiner
	// If, when set, is checked in the INSERT: a user for whom these
	// criteria no longer hold at Now (with the contact's properties) does
	// not join. It closes the gap between choosing joiners and inserting.
	If buckets.Condition
	// LiveContact, when set, joins only users who still have a live
	// contact at the INSERT: joiners chosen from contacts (the sweep's,
	// a backfill's) whom an erasure may have reached since.
	LiveContact bool
	// DateExpiry, when ExpiresAt is nil, sets each row's expires_at to the
	// earliest end of these relative-date legs for the user's contact
	// (contract §3.6).
	DateExpiry []*buckets.PropertyCondition
	// QuietSince, when set, is the absence leg whose CompileQuietSince
	// dates each row's dwell clock (dwell_anchor_at): a backfilled member
	// has been one since they went quiet, not since the backfill.
	QuietSince *buckets.EventCondition
}

// JoinMemberships inserts an active membership for each user, with epoch
// 1 + the number of the pair's earlier rows and the email lower-cased and
// trimmed. The epoch counts the user's rows through the user_id index and
// filters the bucket in the aggregate: with the bucket in the WHERE, the
// planner may count through the bucket's index instead, which looks cheap
// while a bucket is empty and is quadratic while a backfill fills it. A
// user who is already an active member (another writer won) gets no row;
// the rows returned are the joins that happened. In a database with
// contact_id (Schema), each row carries the user's live contact, and an
// active row of that contact is another writer's win too.
func JoinMemberships(ctx context.Context, idb bun.IDB, s Schema, n NewMemberships) ([]Membership, error) {
	if len(n.Users) == 0 {
		return nil, nil
	}
	ids, emails := make([]string, len(n.Users)), make([]string, len(n.Users))
	for i, u := range n.Users {
		ids[i], emails[i] = u.UserID, u.Email
	}
	// c is the user's live contact, at most one (contacts_external_id_unique_idx),
	// joined once however often the criteria read it.
	subject := Subject{UserID: "u.user_id", Properties: "c.properties"}
	cond := Predicate{SQL: "true"}
	if n.If != nil {
		cond = CompileCriteria(n.If, n.Now, subject)
	}
	expires := Predicate{SQL: "?::timestamptz", Args: []any{n.ExpiresAt}}
	dateExpiry := n.ExpiresAt == nil && len(n.DateExpiry) > 0
	if dateExpiry {
		expires = compileDateExpiry(n.DateExpiry, subject.Properties)
	}
	// Only the re-check, the date expiry and a live contact read the
	// contact: without them, probing a million contacts for each joiner
	// costs a quarter of the join.
	contact := ""
	switch {
	case n.LiveContact:
		contact = "JOIN contacts AS c ON c.external_id = u.user_id AND c.deleted_at IS NULL"
	case n.If != nil || dateExpiry:
		contact = "LEFT JOIN contacts AS c ON c.external_id = u.user_id AND c.deleted_at IS NULL"
	}
	extraColumns, extraValues := "", ""
	var extraArgs []any
	if s.MembershipContactID {
		extraColumns, extraValues = ", contact_id", ", "+liveContactOf("u.user_id")
	}
	if n.QuietSince != nil {
		anchor := CompileQuietSince(n.QuietSince, subject)
		extraColumns, extraValues = extraColumns+", dwell_anchor_at", extraValues+", "+anchor.SQL
		extraArgs = anchor.Args
	}
	var rows []Membership
	err := idb.NewRaw(`
		INSERT INTO bucket_memberships AS m (user_id, user_email, bucket_id, status, entered_at, expires_at,
			max_dwell_at, last_evaluated_at, entry_count, source, created_at, updated_at`+extraColumns+`)
		SELECT u.user_id, nullif(lower(btrim(u.email)), ''), ?, 'active', ?, `+expires.SQL+`, ?, ?,
			1 + (SELECT count(*) FILTER (WHERE p.bucket_id = ?) FROM bucket_memberships AS p WHERE p.user_id = u.user_id),
			?, ?, ?`+extraValues+`
		FROM unnest(?::text[], ?::text[]) AS u(user_id, email)
		`+contact+`
		WHERE `+cond.SQL+`
		ON CONFLICT DO NOTHING
		RETURNING m.id, m.user_id, m.user_email, m.entered_at, m.entry_count, m.expires_at, m.max_dwell_at`,
		slices.Concat([]any{n.BucketID, n.Now}, expires.Args, []any{n.MaxDwellAt, n.Now, n.BucketID, n.Source, n.Now, n.Now},
			extraArgs, []any{pgdialect.Array(ids), pgdialect.Array(emails)}, cond.Args)...,
	).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("inserting %d memberships of bucket %q: %w", len(n.Users), n.BucketID, err)
	}
	return rows, nil
}

// LastLeftAt returns, for each of the users who has an earlier membership
// of the bucket that ended, when the latest of them ended.
func LastLeftAt(ctx context.Context, idb bun.IDB, bucketID string, userIDs []string) (map[string]time.Time, error) {
	var rows []struct {
		UserID string    `bun:"user_id"`
		LeftAt time.Time `bun:"left_at"`
	}
	err := idb.NewSelect().TableExpr("bucket_memberships AS m").
		ColumnExpr("m.user_id, max(m.left_at) AS left_at").
		Where("m.bucket_id = ?", bucketID).
		Where("m.user_id = ANY(?)", pgdialect.Array(userIDs)).
		Where("m.status = 'left' AND m.left_at IS NOT NULL").
		GroupExpr("m.user_id").
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("reading earlier leaves of bucket %q: %w", bucketID, err)
	}
	out := make(map[string]time.Time, len(rows))
	for _, r := range rows {
		out[r.UserID] = r.LeftAt
	}
	return out, nil
}

// LeaveCAS is the compare-and-set of a leave (contract §5.5): by row id,
// only while the row is active, and optionally only while the evidence
// for the leave still stands.
type LeaveCAS struct {
	IDs []string
	Now time.Time
	// Unless, when set, is re-checked in the UPDATE: a member for whom these
	// criteria hold again at Now (with the contact's properties) stays.
	Unless buckets.Condition
	// Armed, when set, holds for each id the expires_at an expiry timer was
	// armed with, which the row must still have: the timer's CAS, which a
	// re-armed or deferred row makes miss.
	Armed []time.Time
}

// rowIDs is the FROM item of an update of memberships by row id: joined
// to the ids, the planner probes the primary key once per id. Written as
// m.id = ANY(ids), 10 000 ids of a large table were estimated cheaper by a
// sequential scan: 445 ms a chunk instead of 310 (docs/performance.md).
const rowIDs = "unnest(?::uuid[]) AS ids(id)"

// armedRowIDs is rowIDs with the expires_at each row was armed with.
const armedRowIDs = "unnest(?::uuid[], ?::timestamptz[]) AS ids(id, armed_at)"

// LeaveChunk is the most row ids one leave statement carries.
const LeaveChunk = 10_000

// LeaveMemberships ends the memberships of the CAS, LeaveChunk ids per
// statement, and returns the rows it ended. A row that another writer
// already ended or replaced is not returned.
func LeaveMemberships(ctx context.Context, idb bun.IDB, cas LeaveCAS) ([]Membership, error) {
	var left []Membership
	for start := 0; start < len(cas.IDs); start += LeaveChunk {
		end := min(start+LeaveChunk, len(cas.IDs))
		chunk := cas.IDs[start:end]
		q := idb.NewUpdate().TableExpr("bucket_memberships AS m")
		if cas.Armed != nil {
			q = q.TableExpr(armedRowIDs, pgdialect.Array(chunk), pgdialect.Array(cas.Armed[start:end])).
				Where("m.expires_at = ids.armed_at")
		} else {
			q = q.TableExpr(rowIDs, pgdialect.Array(chunk))
		}
		q = q.Set("status = 'left'").
			Set("left_at = ?", cas.Now).
			Set("last_evaluated_at = ?", cas.Now).
			Set("updated_at = ?", cas.Now).
			Where("m.id = ids.id").
			Where("m.status = 'active'").
			Returning("m.id, m.user_id, m.user_email, m.entered_at, m.entry_count")
		if cas.Unless != nil {
			pred := CompileNegation(cas.Unless, cas.Now, membershipSubject)
			q = q.Where(pred.SQL, pred.Args...)
		}
		var rows []Membership
		if err := q.Scan(ctx, &rows); err != nil {
			return nil, fmt.Errorf("leaving %d memberships: %w", len(chunk), err)
		}
		left = append(left, rows...)
	}
	return left, nil
}

// DeferLeaves postpones the leaves of active members still inside their
// minimum dwell: expires_at becomes entered_at + minDwell, which the
// sweep's deferred pass picks up (contract §5.5 step 1). With unless set,
// a member for whom those criteria hold again at now stays as they are.
func DeferLeaves(ctx context.Context, idb bun.IDB, ids []string, minDwell time.Duration, unless buckets.Condition, now time.Time) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	q := idb.NewUpdate().TableExpr("bucket_memberships AS m").
		TableExpr(rowIDs, pgdialect.Array(ids)).
		Set("expires_at = m.entered_at + ? * interval '1 microsecond'", minDwell.Microseconds()).
		Where("m.id = ids.id").
		Where("m.status = 'active'")
	if unless != nil {
		pred := CompileNegation(unless, now, membershipSubject)
		q = q.Where(pred.SQL, pred.Args...)
	}
	res, err := q.Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("deferring %d leaves: %w", len(ids), err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// MembershipByID returns the membership row with the id, or nil.
func MembershipByID(ctx context.Context, idb bun.IDB, id string) (*Membership, error) {
	var rows []Membership
	if err := idb.NewSelect().Model(&rows).Where("m.id = ?", id).Scan(ctx); err != nil {
		return nil, fmt.Errorf("reading membership %s: %w", id, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	return &rows[0], nil
}

// LockMemberships locks the rows of the ids that are still active
// memberships, in id order, and returns them as they are now. Every path
// that decides about a membership takes this lock first and re-reads what
// it decides on in later statements, so that a decision is never applied
// on a snapshot older than a commit it waited for (contract §5.3).
func LockMemberships(ctx context.Context, idb bun.IDB, ids []string) ([]Membership, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	var rows []Membership
	err := idb.NewSelect().Model(&rows).
		TableExpr(rowIDs, pgdialect.Array(ids)).
		Where("m.id = ids.id").
		Where("m.status = 'active' AND m.deleted_at IS NULL").
		OrderExpr("m.id").
		For("UPDATE OF m").
		Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("locking %d memberships: %w", len(ids), err)
	}
	return rows, nil
}

// LockUserMemberships locks the active memberships of the users in the
// buckets, in (user, bucket) order, and returns them: the real-time path
// takes this lock before it evaluates its users (contract §5.3). It locks
// every pair of the two lists — a round of users with different candidate
// buckets locks a little more than it evaluates — because one index scan
// over both lists costs a third of what a join with the exact pairs does.
// It is planned at every run, with its lists written in: prepared, its
// one generic plan read a batch's users through the bucket's index, 66 ms
// a batch of 100 where the plan of the lists' own sizes took 11 ms
// (docs/performance.md, *Planning an ingest*).
func LockUserMemberships(ctx context.Context, idb bun.IDB, userIDs, bucketIDs []string) ([]Membership, error) {
	if len(userIDs) == 0 || len(bucketIDs) == 0 {
		return nil, nil
	}
	var rows []Membership
	err := idb.NewSelect().Model(&rows).
		Where("m.user_id = ANY(?)", pgdialect.Array(userIDs)).
		Where("m.bucket_id = ANY(?)", pgdialect.Array(bucketIDs)).
		Where("m.status = 'active' AND m.deleted_at IS NULL").
		OrderExpr("m.user_id, m.bucket_id").
		For("UPDATE OF m").
		Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("locking the memberships of %d users: %w", len(userIDs), err)
	}
	return rows, nil
}

// DwellPass is one dwell schedule's pass over a bucket's members at Now
// (contract §14): the schedule fires once After a membership's dwell
// clock, or each time Every has passed; exactly one is set.
type DwellPass struct {
	BucketID string
	Label    string
	After    time.Duration
	Every    time.Duration
	Now      time.Time
}

// dwellClock is a membership's dwell clock: when it began by its
// criteria, if a backfill knew, else when it was entered.
const dwellClock = "coalesce(m.dwell_anchor_at, m.entered_at)"

// due is the predicate of a membership m being due to fire the schedule:
// its clock is at least the offset old and, for after, it has not fired
// the label yet or, for every, it last fired it at least every ago. A
// stamp that is not a string (a hand-edited row) counts as no stamp.
func (p DwellPass) due() (string, []any) {
	if p.Every > 0 {
		cutoff := p.Now.Add(-p.Every)
		return dwellClock + " <= ?0 AND coalesce(CASE WHEN jsonb_typeof(m.dwell_state -> ?1) = 'string' " +
				"THEN (m.dwell_state ->> ?1)::timestamptz END, " + dwellClock + ") <= ?0",
			[]any{cutoff, p.Label}
	}
	return dwellClock + " <= ? AND m.dwell_state -> ? IS NULL", []any{p.Now.Add(-p.After), p.Label}
}

// DuePage is a page of DueDwellers: the ids of the memberships due, and
// the user key of the last one, which the next page starts after.
type DuePage struct {
	IDs  []string
	Last string
}

// DueDwellers returns the ids of at most limit of the bucket's active
// members, live users only, that are due to fire the pass's schedule, in
// user key order after the user after ("" from the first). User key
// order, as the join pass's (JoinCandidates): the rows a page of fires
// reads and writes are keyed by the user, so consecutive pages touch
// neighbouring index pages. A user has at most one active membership of a
// bucket, so the key pages exactly; bucket_memberships_dwell_order_idx
// holds it in that order.
func DueDwellers(ctx context.Context, idb bun.IDB, p DwellPass, after string, limit int) (DuePage, error) {
	pred, args := p.due()
	var rows []struct {
		ID     string `bun:"id"`
		UserID string `bun:"user_id"`
	}
	q := idb.NewSelect().TableExpr(membersOf).
		Column("m.id", "m.user_id").
		Where("m.bucket_id = ?", p.BucketID).
		Where(liveMember).
		Where(pred, args...).
		OrderExpr("m.user_id").
		Limit(int64(limit))
	if after != "" {
		q = q.Where("m.user_id > ?", after)
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return DuePage{}, fmt.Errorf("selecting the members of bucket %q due to fire %s: %w", p.BucketID, p.Label, err)
	}
	var page DuePage
	for _, r := range rows {
		page.IDs = append(page.IDs, r.ID)
		page.Last = r.UserID
	}
	return page, nil
}

// DwellFire is a membership that fired a dwell schedule.
type DwellFire struct {
	ID         string    `bun:"id"`
	UserID     string    `bun:"user_id"`
	UserEmail  *string   `bun:"user_email"`
	EntryCount int       `bun:"entry_count"`
	Clock      time.Time `bun:"clock"`
}

// DwellStampFormat is how a fire is stamped in dwell_state: an RFC 3339
// instant in UTC with milliseconds, as JavaScript's toISOString writes it,
// which Hogsend reads back.
const DwellStampFormat = "2006-01-02T15:04:05.000Z07:00"

// StampDwell stamps the schedule's fire at p.Now (dwell_state[label] and
// last_evaluated_at) on the memberships of the ids that are still active
// and due, and returns them — the compare-and-set of contract §14: a row
// another sweep stamped, or that left or was erased, since it was chosen
// is skipped, the statement seeing its commit once it has its lock.
func StampDwell(ctx context.Context, idb bun.IDB, p DwellPass, ids []string) ([]DwellFire, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	pred, args := p.due()
	stamp := p.Now.UTC().Format(DwellStampFormat)
	var fires []DwellFire
	err := idb.NewUpdate().TableExpr("bucket_memberships AS m").
		TableExpr(rowIDs, pgdialect.Array(ids)).
		Set("dwell_state = coalesce(m.dwell_state, '{}') || jsonb_build_object(?::text, ?::text)", p.Label, stamp).
		Set("last_evaluated_at = ?", p.Now).
		Set("updated_at = ?", p.Now).
		Where("m.id = ids.id").
		Where("m.status = 'active' AND m.deleted_at IS NULL").
		Where(pred, args...).
		Returning("m.id, m.user_id, m.user_email, m.entry_count, "+dwellClock+" AS clock").
		Scan(ctx, &fires)
	if err != nil {
		return nil, fmt.Errorf("stamping %d fires of %s in bucket %q: %w", len(ids), p.Label, p.BucketID, err)
	}
	return fires, nil
}
