package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
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
	DeletedAt       *time.Time      `bun:"deleted_at"`
	CreatedAt       time.Time       `bun:"created_at,nullzero,notnull,default:now()"`
	UpdatedAt       time.Time       `bun:"updated_at,nullzero,notnull,default:now()"`
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

// InsertMemberships inserts membership rows as given.
func InsertMemberships(ctx context.Context, idb bun.IDB, rows []Membership) error {
	if len(rows) == 0 {
		return nil
	}
	if _, err := idb.NewInsert().Model(&rows).Exec(ctx); err != nil {
		return fmt.Errorf("inserting %d memberships: %w", len(rows), err)
	}
	return nil
}
