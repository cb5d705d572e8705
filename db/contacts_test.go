package db_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// The join pass takes its candidates in one deterministic order (contract
// §6.3), the user key's: every index a join writes is keyed by the user,
// so batches in that order write neighbouring pages. The contacts' ids are
// random uuids, in another order.
func TestJoinCandidatesComeInUserKeyOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	conn, _ := dbtest.New(t)
	require.NoError(t, dbtest.InsertContacts(ctx, conn, dbtest.Contacts(dbtest.Users("u", 300), `{"plan": "trial"}`)))
	bs, report := buckets.Load(fstest.MapFS{"buckets/trial.json": {Data: []byte(
		`{"id":"trial","name":"Trial","criteria":{"type":"property","property":"plan","operator":"eq","value":"trial"}}`)}})
	require.NoError(t, report.Err())

	got, err := db.JoinCandidates(ctx, conn, bs[0], time.Now(), nil)
	require.NoError(t, err)
	require.Len(t, got, 300)
	require.True(t, slices.IsSortedFunc(got, func(a, b db.Candidate) int { return strings.Compare(a.UserID, b.UserID) }),
		"in user key order")
	require.False(t, slices.IsSortedFunc(got, func(a, b db.Candidate) int { return strings.Compare(a.ContactID, b.ContactID) }),
		"the contacts' ids are in another order")
}
