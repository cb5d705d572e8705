package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// subject is the user a real-time evaluation is about (contract §5.3).
type subject struct {
	UserID string
	Email  string
	// Properties are the live contact's properties; empty for a user
	// without a contact.
	Properties buckets.Properties
}

// evaluateUser evaluates each candidate bucket for the user inside tx —
// event counts see the transaction's own writes — and joins or leaves
// where the verdict and the membership disagree. The caller holds the
// user's contact lock (the ingest's upsert, or liveSubject with lock); the
// user's memberships of the candidates are locked here before anything is
// evaluated, so every statement of the evaluation sees the commits of the
// paths it waited for (contract §5.3). The candidates are switched on (see
// switchedOn): it uses no connection but tx.
func evaluateUser(ctx context.Context, tx bun.IDB, d *Deps, u subject, candidates []*buckets.Bucket, source string, now time.Time) (Outcome, error) {
	var out Outcome
	if len(candidates) == 0 {
		return out, nil
	}
	ids := make([]string, len(candidates))
	for i, b := range candidates {
		ids[i] = b.ID
	}
	rows, err := db.LockUserMemberships(ctx, tx, u.UserID, ids)
	if err != nil {
		return out, err
	}
	active := make(map[string]db.Membership, len(rows))
	for _, m := range rows {
		active[m.BucketID] = m
	}
	facts := db.UserFacts{IDB: tx, UserID: u.UserID, Properties: u.Properties}
	for _, b := range candidates {
		holds, err := buckets.Evaluate(ctx, b.Criteria, now, facts)
		if err != nil {
			return out, fmt.Errorf("evaluating bucket %q for user %q: %w", b.ID, u.UserID, err)
		}
		m, member := active[b.ID]
		var step Outcome
		switch {
		case holds && !member:
			step, err = join(ctx, tx, d, b, []db.Joiner{{UserID: u.UserID, Email: u.Email}}, joinSpec{Source: source}, now)
		case !holds && member:
			step, err = leave(ctx, tx, d, b, []db.Membership{m}, leaveSpec{Source: source, Reason: ReasonCriteria}, now)
		}
		if err != nil {
			return out, fmt.Errorf("bucket %q: %w", b.ID, err)
		}
		out.add(step)
	}
	return out, nil
}

// liveSubject reads the user's contact inside tx: the subject to evaluate,
// or erased true when the user's only contacts are soft-deleted. It locks
// the contact until tx ends: the per-user lock of an evaluation that does
// not upsert the contact (contract §5.3).
func liveSubject(ctx context.Context, tx bun.Tx, userID, email string) (u subject, erased bool, err error) {
	c, err := db.LockContactByUser(ctx, tx, userID)
	return contactSubject(userID, email, c, err)
}

// contactSubject is the subject of a user whose contact was read as c
// (nil for none), or erased true when c is soft-deleted.
func contactSubject(userID, email string, c *db.Contact, err error) (u subject, erased bool, _ error) {
	switch {
	case err != nil:
		return subject{}, false, err
	case c != nil && c.DeletedAt != nil:
		return subject{}, true, nil
	}
	return subjectOf(userID, email, c), false, nil
}

// subjectOf is the subject of a user with the live contact c (nil for
// none). The contact's email, when it has one, wins over email.
func subjectOf(userID, email string, c *db.Contact) subject {
	u := subject{UserID: userID, Email: email, Properties: buckets.Properties{}}
	if c != nil {
		u.Properties = c.PropertyMap()
		if c.Email != nil && *c.Email != "" {
			u.Email = *c.Email
		}
	}
	return u
}

// switchedOn keeps the buckets the runtime switch leaves on. Call it before
// opening a transaction: the switch may read from the pool, and a
// transaction waiting for a second connection can starve the pool.
func switchedOn(ctx context.Context, d *Deps, bs []*buckets.Bucket) ([]*buckets.Bucket, error) {
	on := make([]*buckets.Bucket, 0, len(bs))
	for _, b := range bs {
		enabled, err := d.Switch.Enabled(ctx, b.ID)
		if err != nil {
			return nil, err
		}
		if enabled {
			on = append(on, b)
		}
	}
	return on, nil
}

// switchedOnIDs reads the runtime switch of each bucket id. Like
// switchedOn, call it before opening a transaction.
func switchedOnIDs(ctx context.Context, d *Deps, ids []string) (map[string]bool, error) {
	on := make(map[string]bool, len(ids))
	for _, id := range ids {
		enabled, err := d.Switch.Enabled(ctx, id)
		if err != nil {
			return nil, err
		}
		on[id] = enabled
	}
	return on, nil
}
