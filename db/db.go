package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/driver/pgdriver"
)

// DefaultMaxConns bounds the connection pool of Open; callers may change it
// with SetMaxOpenConns. Without a bound, a worker running a hundred task
// runs at once opens a connection for each and exhausts the server's.
const DefaultMaxConns = 10

// Open connects to the database at url and checks that it answers.
//
// Reads have no fixed timeout (the driver's default is 10 s): a set-based
// sweep or backfill over a large bucket runs longer than that, and every
// statement is bounded by its context instead — a task's execution
// timeout, or the command's signal handling.
// A read_timeout in the URL still applies.
func Open(ctx context.Context, url string) (*bun.DB, error) {
	connector, err := newConnector(url)
	if err != nil {
		return nil, err
	}
	sqldb := sql.OpenDB(connector)
	sqldb.SetMaxOpenConns(DefaultMaxConns)
	sqldb.SetMaxIdleConns(DefaultMaxConns)
	db := bun.NewDB(sqldb, pgdialect.New())
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connecting to the database: %w", err)
	}
	return db, nil
}

// newConnector parses the URL; the driver panics on a malformed one.
func newConnector(url string) (c *pgdriver.Connector, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid database URL: %v", r)
		}
	}()
	return pgdriver.NewConnector(pgdriver.WithReadTimeout(0), pgdriver.WithDSN(url)), nil
}

// IsDeadlock reports whether err is Postgres aborting a transaction to
// break a deadlock (SQLSTATE 40P01): the transaction may simply run again.
func IsDeadlock(err error) bool {
	var pgErr pgdriver.Error
	return errors.As(err, &pgErr) && pgErr.Field('C') == "40P01"
}
