package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"

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

// ErrInvalidURL is returned by Open for a database URL it cannot use.
var ErrInvalidURL = errors.New("invalid database URL")

// newConnector parses the URL. A malformed one is an ErrInvalidURL error
// that shows the URL with its password masked, never the password (the
// driver panics on some, with the URL in the message).
func newConnector(dsn string) (c *pgdriver.Connector, err error) {
	mask := func(msg string) string { return msg }
	u, perr := url.Parse(dsn)
	if perr != nil {
		var ue *url.Error
		if errors.As(perr, &ue) {
			perr = ue.Err
		}
		return nil, fmt.Errorf("%w %s: %v", ErrInvalidURL, maskedURL(dsn), perr)
	}
	if password, ok := u.User.Password(); ok && password != "" {
		mask = func(msg string) string { return strings.ReplaceAll(msg, password, "xxxxx") }
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w %s: %s", ErrInvalidURL, maskedURL(dsn), mask(fmt.Sprint(r)))
		}
	}()
	return pgdriver.NewConnector(pgdriver.WithReadTimeout(0), pgdriver.WithDSN(dsn), shortestFloats), nil
}

// shortestFloats makes every session print a double as its shortest
// decimal that reads back as it (Postgres' default, which a server or
// role setting may change): the compiled sums and averages read event
// values that way, as buckets does (contract §3.5).
func shortestFloats(conf *pgdriver.Config) {
	params := map[string]any{}
	for k, v := range conf.ConnParams {
		params[k] = v
	}
	params["extra_float_digits"] = "1"
	conf.ConnParams = params
}

// passwordParam matches a password query parameter's value.
var passwordParam = regexp.MustCompile(`([?&]password=)[^&#]*`)

// maskedURL is the URL with its password replaced by xxxxx: the user
// info's, everything between the first colon after the scheme and the
// last @ (a malformed URL may hold anything there), and a password query
// parameter's.
func maskedURL(dsn string) string {
	if scheme := strings.Index(dsn, "://"); scheme >= 0 {
		rest := dsn[scheme+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				dsn = dsn[:scheme+3] + rest[:colon+1] + "xxxxx" + rest[at:]
			}
		}
	}
	return passwordParam.ReplaceAllString(dsn, "${1}xxxxx")
}

// IsDeadlock reports whether err is Postgres aborting a transaction to
// break a deadlock (SQLSTATE 40P01): the transaction may simply run again.
func IsDeadlock(err error) bool {
	var pgErr pgdriver.Error
	return errors.As(err, &pgErr) && pgErr.Field('C') == "40P01"
}
