package db

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
)

// UserFacts is what evaluation knows about one user, read from the
// database: the contact's properties, held in memory, and event counts,
// asked of idb when needed, so that inside a transaction they see the
// transaction's own writes.
type UserFacts struct {
	IDB        bun.IDB
	UserID     string
	Properties buckets.Properties
}

// Property implements buckets.Facts.
func (f UserFacts) Property(name string) (any, bool) { return f.Properties.Property(name) }

// CountEvents implements buckets.Facts.
func (f UserFacts) CountEvents(ctx context.Context, name string, since time.Time) (int64, error) {
	return CountUserEvents(ctx, f.IDB, f.UserID, name, since)
}

// EventProperties implements buckets.Facts: the properties of the user's
// events named name at or after since, decoded as contract §3.1 reads
// numbers.
func (f UserFacts) EventProperties(ctx context.Context, name string, since time.Time) ([]buckets.Properties, error) {
	return UserEventProperties(ctx, f.IDB, f.UserID, name, since)
}

// Membership implements buckets.Facts: the user's active, undeleted
// membership of the bucket.
func (f UserFacts) Membership(ctx context.Context, bucketID string) (buckets.MembershipFact, error) {
	rows, err := ListMemberships(ctx, f.IDB, MembershipFilter{BucketID: bucketID, UserID: f.UserID, Status: StatusActive, Limit: 1})
	if err != nil || len(rows) == 0 {
		return buckets.MembershipFact{}, err
	}
	return buckets.MembershipFact{Member: true, RowID: rows[0].ID, EnteredAt: rows[0].EnteredAt}, nil
}
