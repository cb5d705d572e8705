package tasks

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestForgottenUserIsNeverTouchedAgain(t *testing.T) {
	t.Parallel()
	for _, withContact := range []bool{true, false} {
		e := newEnv(t, defs{"buckets/recent.yaml": recentlyActive, "buckets/quiet.yaml": "id: quiet\nname: Quiet\n" +
			"criteria: {type: event, eventName: app.active, check: not_exists, within: 7d}\n"})
		e.backfilled("quiet")
		if withContact {
			e.contact("u", `{"plan":"pro"}`)
		}
		e.events("u", "app.active", 8*day) // leaves "recent", joins "quiet" at the next sweep
		e.member("recent", "u", 9*day)

		out, err := Forget(e.ctx, e.deps, "u")
		require.NoError(t, err)
		require.Equal(t, 1, out.Memberships)
		require.Equal(t, map[bool]int{true: 1, false: 0}[withContact], out.Contacts)

		rep := e.sweep(ReconcileInput{})
		require.Equal(t, 0, rep.Reconciled)
		require.Equal(t, 0, rep.Joined)
		res := e.ingest("app.active", `{"userId":"u","contactProperties":{"plan":"free"}}`)
		require.Equal(t, "contact_deleted", res.Reason)
		e.clock.Advance(time.Hour)
		require.Equal(t, 0, e.sweep(ReconcileInput{}).Joined)

		require.Equal(t, 0, e.count("SELECT count(*) FROM bucket_memberships WHERE deleted_at IS NULL"), "no new rows")
		require.Empty(t, e.transitions("u"), "nothing emitted, not even on forgetting")
		require.Equal(t, 0, e.count("SELECT count(*) FROM bucket_event_outbox"))
		require.Equal(t, 0, e.count("SELECT count(*) FROM contacts WHERE deleted_at IS NULL"))
	}
}
