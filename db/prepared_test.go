package db_test

import (
	"context"
	"encoding/json"
	neturl "net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// hostile are user keys, emails and event names that an array's text
// form must quote and escape.
var hostile = []string{
	``, `"`, `\`, `\"`, `{}`, `{a,b}`, `a,b`, `NULL`, `null`, ` spaced `, `'quoted'`, "tab\tnew\nline", `ünïcödé ✓`, `$1`, `?`,
}

// TestParametersCarryAnyText runs the statements sent with parameters on
// values an array's text form must escape, and reads them back with
// statements whose values bun writes in.
func TestParametersCarryAnyText(t *testing.T) {
	ctx := context.Background()
	conn, _ := dbtest.New(t)
	now := time.Date(2026, 12, 6, 1, 2, 3, 456789000, time.UTC)

	var arrivals []db.Arrival
	for i, u := range hostile {
		email, key := "e"+u, "key"+u
		props, err := json.Marshal(map[string]any{"key": u, "i": i})
		require.NoError(t, err)
		arrivals = append(arrivals, db.Arrival{
			Event: db.UserEvent{UserID: "user" + u, Event: "event" + u, Properties: props, IdempotencyKey: &key, Source: &u, OccurredAt: now},
			Email: &email, ContactProperties: props,
		})
	}
	arrived, err := db.StoreEvents(ctx, conn, db.Schema{}, arrivals, now)
	require.NoError(t, err)
	require.Len(t, arrived, len(hostile))

	var users []string
	for _, a := range arrivals {
		users = append(users, a.Event.UserID)
	}
	read, err := db.ContactsByUser(ctx, conn, users)
	require.NoError(t, err)
	for i, a := range arrivals {
		user := a.Event.UserID
		c := read[user]
		require.NotNil(t, c, "user %q", user)
		require.Equal(t, *a.Email, *c.Email)
		require.JSONEq(t, string(a.ContactProperties), string(c.Properties), "user %q", user)
		require.True(t, c.LastSeenAt.Equal(now), "user %q: last seen %s", user, c.LastSeenAt)
		require.True(t, arrived[i].Stored, "user %q", user)
		require.Equal(t, c.ID, arrived[i].Contact.ID, "the statement returns the contact it wrote (%d)", i)

		var stored db.UserEvent
		require.NoError(t, conn.NewSelect().Model(&stored).Where("e.idempotency_key = ?", *a.Event.IdempotencyKey).Scan(ctx))
		require.Equal(t, user, stored.UserID)
		require.Equal(t, a.Event.Event, stored.Event)
		require.Equal(t, *a.Event.Source, *stored.Source)
		require.JSONEq(t, string(a.Event.Properties), string(stored.Properties), "user %q", user)
		require.True(t, stored.OccurredAt.Equal(now), "user %q: occurred %s", user, stored.OccurredAt)
	}

	bucket := `b"\{x}`
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, dbtest.Members(users, bucket, now)))
	require.NoError(t, conn.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		require.NoError(t, db.LockUsers(ctx, tx, users))
		rows, err := db.LockUserMemberships(ctx, tx, users, []string{bucket, "other"})
		require.NoError(t, err)
		var got []string
		for _, m := range rows {
			require.Equal(t, bucket, m.BucketID)
			got = append(got, m.UserID)
		}
		require.ElementsMatch(t, users, got)
		return nil
	}))

	var events []db.Emission
	for i, u := range users {
		events = append(events, db.Emission{Event: "bucket:entered:" + u, IdempotencyKey: "key" + u, UserID: u, UserEmail: "e" + u, EntryCount: i + 1})
	}
	stored, err := db.InsertEmissions(ctx, conn, db.Schema{}, db.Emissions{
		BucketID: bucket, BucketName: `"name"`, Transition: "entered", Source: "ingest", Events: events,
	}, now)
	require.NoError(t, err)
	require.Len(t, stored, len(events))
	for _, u := range users {
		got, err := db.UserTransitions(ctx, conn, u, bucket)
		require.NoError(t, err)
		require.Len(t, got, 1, "user %q", u)
		require.Equal(t, "bucket:entered:"+u, got[0].Event)
		require.Equal(t, "key"+u, *got[0].IdempotencyKey)
		var props map[string]any
		require.NoError(t, json.Unmarshal(got[0].Properties, &props))
		require.Equal(t, u, props["userId"])
		require.Equal(t, `"name"`, props["bucketName"])
	}
}

// preparedStatements lists the statements the connection's session has
// prepared, with how many times each ran (planned afresh, or on its
// generic plan).
func preparedStatements(ctx context.Context, t *testing.T, conn bun.IDB) map[string][2]int {
	t.Helper()
	var rows []struct {
		Statement string `bun:"statement"`
		Custom    int    `bun:"custom_plans"`
		Generic   int    `bun:"generic_plans"`
	}
	require.NoError(t, conn.NewRaw("SELECT statement, custom_plans, generic_plans FROM pg_prepared_statements").Scan(ctx, &rows))
	out := map[string][2]int{}
	for _, r := range rows {
		out[r.Statement] = [2]int{r.Custom, r.Generic}
	}
	return out
}

// TestStatementsArePreparedOncePerConnection runs the statement that
// stores an ingest's events with their contacts many times on a pool of
// one connection: the connection prepares it once and PostgreSQL stops
// planning it. With prepare=off in the URL nothing is prepared, and the
// statement works the same.
func TestStatementsArePreparedOncePerConnection(t *testing.T) {
	ctx := context.Background()
	_, url := dbtest.New(t)
	upsert := func(conn *bun.DB, i int) {
		email, at := "u@example.com", time.Date(2026, 12, 6, 0, 0, i, 0, time.UTC)
		_, err := db.StoreEvents(ctx, conn, db.Schema{}, []db.Arrival{{Event: db.UserEvent{UserID: "u", Event: "app.active", OccurredAt: at},
			Email: &email, ContactProperties: json.RawMessage(`{"n":1}`)}}, at)
		require.NoError(t, err)
	}

	conn, err := db.Open(ctx, url)
	require.NoError(t, err)
	defer conn.Close()
	db.SetMaxConns(conn, 1)
	const runs = 20
	for i := range runs {
		upsert(conn, i)
	}
	prepared := preparedStatements(ctx, t, conn)
	require.Len(t, prepared, 1, "one statement, prepared once: %v", prepared)
	for statement, plans := range prepared {
		require.Contains(t, statement, "INSERT INTO contacts")
		require.Equal(t, runs, plans[0]+plans[1], "every run used the prepared statement")
		require.Positive(t, plans[1], "PostgreSQL runs it on its generic plan, planned once: %v", plans)
	}

	u, err := neturl.Parse(url)
	require.NoError(t, err)
	q := u.Query()
	q.Set("prepare", "off")
	u.RawQuery = q.Encode()
	simple, err := db.Open(ctx, u.String())
	require.NoError(t, err)
	defer simple.Close()
	db.SetMaxConns(simple, 1)
	upsert(simple, runs)
	require.Empty(t, preparedStatements(ctx, t, simple))
	c, err := db.ContactByUser(ctx, simple, "u")
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 12, 6, 0, 0, runs, 0, time.UTC), c.LastSeenAt.UTC())

	q.Set("prepare", "sometimes")
	u.RawQuery = q.Encode()
	_, err = db.Open(ctx, u.String())
	require.ErrorIs(t, err, db.ErrInvalidURL)
	require.ErrorContains(t, err, `prepare is "sometimes"`)
}

// TestPreparedStatementsOutliveANewColumn adds a column to contacts, as a
// Hogsend migration does, while the connection holds the statement that
// upserts them prepared: it names its columns, so it goes on returning the
// same rows.
// A prepared statement that returned every column fails once after such a
// change — its rows changed shape — and is then prepared afresh.
func TestPreparedStatementsOutliveANewColumn(t *testing.T) {
	ctx := context.Background()
	conn, _ := dbtest.New(t)
	db.SetMaxConns(conn, 1)
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	upsert := func(user string) {
		got, err := db.StoreEvents(ctx, conn, db.Schema{}, []db.Arrival{{Event: db.UserEvent{UserID: user, Event: "app.active", OccurredAt: now}}}, now)
		require.NoError(t, err)
		require.Equal(t, user, *got[0].Contact.ExternalID)
	}
	upsert("before")
	_, err := conn.ExecContext(ctx, "ALTER TABLE contacts ADD COLUMN anonymous_id text")
	require.NoError(t, err)
	upsert("after")

	everything := func() (int, error) {
		rows, err := conn.DB.QueryContext(ctx, "SELECT * FROM contacts WHERE external_id = $1", "after")
		if err != nil {
			return 0, err
		}
		defer rows.Close()
		columns, err := rows.Columns()
		return len(columns), err
	}
	before, err := everything()
	require.NoError(t, err)
	_, err = conn.ExecContext(ctx, "ALTER TABLE contacts ADD COLUMN another text")
	require.NoError(t, err)
	_, err = everything()
	require.ErrorContains(t, err, "cached plan must not change result type")
	after, err := everything()
	require.NoError(t, err, "the statement is prepared afresh")
	require.Equal(t, before+1, after)
}

// TestGenericPlansLookUpByIndex prepares the statements of an ingest that
// read contacts and events — the events stored with their contacts, and
// in Hogsend's database the transition events, which record the user's
// contact — on empty tables, as the first ingest into a new database
// does, and runs them again once the tables hold 20 000 contacts and
// events, for a new user, a live one and an erased one, each event with a
// key. They run on the generic plans made on the empty tables, and each
// must have looked its users and keys up by index: none read a whole
// table.
func TestGenericPlansLookUpByIndex(t *testing.T) {
	for name, open := range map[string]func(testing.TB) (*bun.DB, string){"worker": dbtest.New, "hogsend": dbtest.HogsendLatest} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			conn, _ := open(t)
			db.SetMaxConns(conn, 1)
			schema, err := db.ReadSchema(ctx, conn)
			require.NoError(t, err)
			now := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
			ingest := func(ctx context.Context, idb bun.IDB, user string) {
				email := user + "@example.com"
				_, err := db.StoreEvents(ctx, idb, schema, []db.Arrival{{Email: &email,
					Event: db.UserEvent{UserID: user, Event: "app.active", IdempotencyKey: &email, OccurredAt: now}}}, now)
				require.NoError(t, err)
				_, err = db.InsertEmissions(ctx, idb, schema, db.Emissions{BucketID: "b", BucketName: "B", Transition: "entered", Source: "event",
					Events: []db.Emission{{Event: "bucket:entered:b", IdempotencyKey: "k-" + user, UserID: user, UserEmail: email, EntryCount: 1}}}, now)
				require.NoError(t, err)
			}
			ingest(ctx, conn, "first")
			_, err = conn.ExecContext(ctx, `INSERT INTO contacts (external_id, email, deleted_at)
				SELECT 'grown-' || g, 'grown-' || g || '@example.com', CASE WHEN g % 10 = 0 THEN now() END
				FROM generate_series(1, 20000) AS g`)
			require.NoError(t, err)
			_, err = conn.ExecContext(ctx, `INSERT INTO user_events (user_id, event, idempotency_key, occurred_at)
				SELECT 'grown-' || g, 'app.active', 'grown-key-' || g, now() FROM generate_series(1, 20000) AS g`)
			require.NoError(t, err)

			for _, user := range []string{"new", "grown-7", "grown-10"} {
				require.NoError(t, conn.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
					// The backend's counts not yet reported, this
					// transaction's and those of the ones before.
					scans := func() (n int) {
						require.NoError(t, tx.NewRaw("SELECT sum(seq_scan) FROM pg_stat_xact_user_tables WHERE relname IN ('contacts', 'user_events')").Scan(ctx, &n))
						return n
					}
					before := scans()
					ingest(ctx, tx, user)
					require.Equal(t, before, scans(), "user %s: an ingest read the whole contacts or user_events table", user)
					return nil
				}))
			}
			upserts := 0
			for statement, plans := range preparedStatements(ctx, t, conn) {
				if strings.Contains(statement, "INSERT INTO contacts") {
					upserts++
					require.Equal(t, [2]int{0, 4}, plans, "the statement was prepared once and ran four times on its generic plan")
				}
			}
			require.Equal(t, 1, upserts)
		})
	}
}
