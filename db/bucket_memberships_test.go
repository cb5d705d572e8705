package db_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// The dwell pass pages a bucket's due members in user key order, as the
// join pass does: every row a page of fires reads and writes is keyed by
// the user. The pages cover every due member once, and nobody else: not a
// member whose clock has not come, not an erased user. The memberships'
// ids are random uuids, in another order.
func TestDueDwellersPageInUserKeyOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, _ := dbtest.New(t)
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	users := dbtest.Users("u", 250)
	rows := dbtest.Members(users, "dormant", now.Add(-48*time.Hour))
	rows[7].EnteredAt = now.Add(-time.Hour) // not due yet
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, rows))
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, dbtest.Members([]string{"u9"}, "other", now.Add(-48*time.Hour))))
	erased := dbtest.Contacts([]string{"u42"}, `{}`)[0]
	erased.DeletedAt = &now
	require.NoError(t, dbtest.InsertContact(ctx, conn, &erased))

	pass := db.DwellPass{BucketID: "dormant", Label: "after-86400000", After: 24 * time.Hour, Now: now}
	var got, ids []string
	for after := ""; ; {
		page, err := db.DueDwellers(ctx, conn, pass, after, 40)
		require.NoError(t, err)
		ids = append(ids, page.IDs...)
		if len(page.IDs) < 40 {
			break
		}
		after = page.Last
	}
	var members []db.Membership
	require.NoError(t, conn.NewSelect().Model(&members).Where("id = ANY(?)", pgdialect.Array(ids)).Scan(ctx))
	byID := map[string]string{}
	for _, m := range members {
		byID[m.ID] = m.UserID
	}
	for _, id := range ids {
		got = append(got, byID[id])
	}

	var want []string
	for _, u := range users {
		if u != "u8" && u != "u42" {
			want = append(want, u)
		}
	}
	slices.Sort(want)
	require.Equal(t, want, got, "every due member once, in user key order")
	require.False(t, slices.IsSorted(ids), "the memberships' ids are in another order")
}
