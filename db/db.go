package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/driver/pgdriver"
)

// DefaultMaxConns bounds the connection pool of Open; callers may change it
// with SetMaxConns. Without a bound, a worker running a hundred task runs
// at once opens a connection for each and exhausts the server's.
const DefaultMaxConns = 10

// SetMaxConns bounds the pool of conn to n connections and lets all n stay
// open while idle. SetMaxOpenConns alone leaves the idle bound where it
// was (two, unless set): a worker with more task runs at once than that
// closes a connection after nearly every statement and opens a new one for
// the next — a backend started, a password checked and every catalog cache
// cold again, each time. Beside Hatchet that churn cost the real-time
// ingest more than a quarter of its rate (docs/performance.md).
func SetMaxConns(conn *bun.DB, n int) {
	conn.SetMaxOpenConns(n)
	conn.SetMaxIdleConns(n)
}

// Open connects to the database of the connection string — a URL or
// keyword/value pairs (see connURL) — and checks that it answers. No error
// it returns holds the password.
//
// Reads have no fixed timeout (the driver's default is 10 s): a set-based
// sweep or backfill over a large bucket runs longer than that, and every
// statement is bounded by its context instead — a task's execution
// timeout, or the command's signal handling.
// A read_timeout in the URL still applies.
func Open(ctx context.Context, dsn string) (*bun.DB, error) {
	connector, err := newConnector(dsn)
	if err != nil {
		return nil, err
	}
	sqldb := sql.OpenDB(connector)
	// A Hogsend database of today has columns the models lack (contacts'
	// anonymous_id, user_events' value, …): a statement returning c.* must
	// not fail on them.
	db := bun.NewDB(sqldb, pgdialect.New(), bun.WithDiscardUnknownColumns())
	SetMaxConns(db, DefaultMaxConns)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connecting to the database: %s", Mask(err.Error(), Secrets(dsn)))
	}
	return db, nil
}

// ErrInvalidURL is returned by Open for a database URL it cannot use.
var ErrInvalidURL = errors.New("invalid database URL")

// newConnector parses the connection string. A malformed one is an
// ErrInvalidURL error that shows it with its password masked, never the
// password (the driver panics on some, with the URL in the message).
//
// Unless the URL says prepare=off, the connections prepare the statements
// sent with parameters (preparingConn): a pooler that hands a session's
// statements to another session (PgBouncer in transaction mode before
// 1.21, or without max_prepared_statements) needs prepare=off.
func newConnector(dsn string) (c driver.Connector, err error) {
	invalid := func(cause string) error {
		return fmt.Errorf("%w %s: %s", ErrInvalidURL, MaskConnString(dsn), Mask(cause, Secrets(dsn)))
	}
	u, err := connURL(dsn)
	if err != nil {
		return nil, invalid(err.Error())
	}
	parsed, err := url.Parse(u)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, invalid(err.Error())
	}
	// prepare is the worker's parameter, not a session's.
	q := parsed.Query()
	prepare := q.Get("prepare")
	if q.Has("prepare") {
		if prepare != "on" && prepare != "off" {
			return nil, invalid(fmt.Sprintf("prepare is %q, not on or off", prepare))
		}
		q.Del("prepare")
		parsed.RawQuery = q.Encode()
		u = parsed.String()
	}
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, invalid(fmt.Sprint(r))
		}
	}()
	pg := pgdriver.NewConnector(pgdriver.WithReadTimeout(0), pgdriver.WithDSN(u), sessionParams)
	if prepare == "off" {
		return pg, nil
	}
	return preparingConnector{pg}, nil
}

// sessionParams sets what every session of the worker runs with:
//
//   - extra_float_digits = 1, always: a double prints as its shortest
//     decimal that reads back as it (Postgres' default, which a server or
//     role setting may change); the compiled sums and averages read event
//     values that way, as buckets does (contract §3.5).
//   - jit = off, unless the URL sets jit. The worker's statements are
//     either short (an ingest, a join batch) or scans that a parallel
//     plan splits between processes, each of which compiles the same
//     expressions: the candidate query of a relative-date bucket's join
//     pass spent 79 ms compiling in its leader alone, and ran 0.2 s
//     faster without (docs/performance.md, *Compiling expressions*).
//   - plan_cache_mode = force_generic_plan, unless the URL sets it: a
//     statement the connection prepared (preparingConn) is planned once,
//     for arrays of any length. Left to choose, PostgreSQL compares the
//     generic plan with the plans of one-element arrays, finds it dearer,
//     and plans every run anew (docs/performance.md, *Planning an
//     ingest*). The worker prepares nothing else.
func sessionParams(conf *pgdriver.Config) {
	params := map[string]any{"jit": "off", "plan_cache_mode": "force_generic_plan"}
	for k, v := range conf.ConnParams {
		params[k] = v
	}
	params["extra_float_digits"] = "1"
	conf.ConnParams = params
}

// IsDeadlock reports whether err is Postgres aborting a transaction to
// break a deadlock (SQLSTATE 40P01): the transaction may simply run again.
func IsDeadlock(err error) bool {
	var pgErr pgdriver.Error
	return errors.As(err, &pgErr) && pgErr.Field('C') == "40P01"
}
