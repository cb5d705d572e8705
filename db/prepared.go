package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/driver/pgdriver"
)

// A few statements every ingest runs (the contact upsert, the user lock,
// the transition events) are sent with their values apart, as parameters
// ($1, $2, …), and each connection prepares each of them once: PostgreSQL
// then parses it once and, in the sessions' plan_cache_mode (sessionParams),
// plans it once, where a statement with its values written in (as bun
// sends every other) is parsed and planned at every run. Planning was more
// of an ingest's database time than running it (docs/performance.md,
// *Planning an ingest*).
//
// A prepared statement's rows keep the shape they had when it was
// prepared: a statement that returned t.* would fail once a column is
// added to t (Hogsend's migrations add some), so each names its columns.
//
// A generic plan is made once, on the tables as they are at the first run:
// in a new database, empty. A prepared statement asks whether a row exists
// with a scalar subquery, not EXISTS, which PostgreSQL may plan on an empty
// table as a hashed read of the whole table, kept as the table grows
// (UpsertContacts).

// maxPrepared bounds the statements one connection keeps prepared. The
// worker prepares a few (one per statement and schema); past the bound a
// statement goes unprepared, its parameters written in by the driver, so
// that a mistake cannot grow without end.
const maxPrepared = 64

// preparingConnector opens connections that prepare the statements sent
// with parameters (preparingConn).
type preparingConnector struct{ *pgdriver.Connector }

func (c preparingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &preparingConn{Conn: conn.(*pgdriver.Conn), stmts: map[string]driver.Stmt{}}, nil
}

// preparingConn is a connection that sends a statement with parameters as
// a statement it prepared on its first use, and every other statement as
// it is. database/sql uses a connection from one goroutine at a time.
type preparingConn struct {
	*pgdriver.Conn
	stmts map[string]driver.Stmt
}

func (c *preparingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	stmt, err := c.prepared(ctx, query, args)
	switch {
	case err != nil:
		return nil, err
	case stmt == nil:
		return c.Conn.QueryContext(ctx, query, args)
	}
	rows, err := stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	return rows, c.failed(query, err)
}

func (c *preparingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	stmt, err := c.prepared(ctx, query, args)
	switch {
	case err != nil:
		return nil, err
	case stmt == nil:
		return c.Conn.ExecContext(ctx, query, args)
	}
	res, err := stmt.(driver.StmtExecContext).ExecContext(ctx, args)
	return res, c.failed(query, err)
}

// prepared is the connection's statement of query, prepared now if it is
// not yet; nil for a statement without parameters, or past maxPrepared:
// those go as they are.
func (c *preparingConn) prepared(ctx context.Context, query string, args []driver.NamedValue) (driver.Stmt, error) {
	if len(args) == 0 {
		return nil, nil
	}
	if stmt, ok := c.stmts[query]; ok {
		return stmt, nil
	}
	if len(c.stmts) == maxPrepared {
		return nil, nil
	}
	stmt, err := c.Conn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	c.stmts[query] = stmt
	return stmt, nil
}

// failed forgets the statement of query when PostgreSQL no longer runs it
// as prepared — its rows changed shape (SQLSTATE 0A000, "cached plan must
// not change result type"): the next run prepares it afresh. The old one
// is left on the server until the connection closes; closing it here
// would fail in the transaction the error aborted.
func (c *preparingConn) failed(query string, err error) error {
	var pgErr pgdriver.Error
	if errors.As(err, &pgErr) && pgErr.Field('C') == "0A000" {
		delete(c.stmts, query)
	}
	return err
}

// queryParams runs query, whose values are its parameters args, and scans
// its rows into dest as bun scans a model or a slice. The connection
// prepares it (see preparingConn), unless the URL says prepare=off.
func queryParams(ctx context.Context, idb bun.IDB, dest any, query string, args ...any) error {
	conn, err := underlying(idb)
	if err != nil {
		return err
	}
	rows, err := conn.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	// NewRaw's query carries the bun.DB of idb, whose options (unknown
	// columns are discarded) the scan follows.
	return idb.NewRaw("").DB().ScanRows(ctx, rows, dest)
}

// execParams is queryParams for a statement whose rows are not read.
func execParams(ctx context.Context, idb bun.IDB, query string, args ...any) error {
	conn, err := underlying(idb)
	if err != nil {
		return err
	}
	_, err = conn.ExecContext(ctx, query, args...)
	return err
}

// underlying is the database/sql DB, Tx or Conn of idb: it hands a
// statement's parameters to the driver, where bun's methods of the same
// names would write them into the statement.
func underlying(idb bun.IDB) (interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}, error) {
	switch c := idb.(type) {
	case bun.Tx:
		return c.Tx, nil
	case *bun.DB:
		return c.DB, nil
	case bun.Conn:
		return c.Conn, nil
	}
	return nil, fmt.Errorf("running a statement with parameters on a %T", idb)
}

// textArray is the text form of a PostgreSQL array of the values, the
// parameter of a ::text[] (or ::uuid[], ::jsonb-read text[]) cast: each
// element quoted, its backslashes and double quotes escaped.
func textArray(values []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		quoteElement(&b, v)
	}
	b.WriteByte('}')
	return b.String()
}

// optionalTextArray is textArray with NULL for each nil value.
func optionalTextArray(values []*string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, v := range values {
		if i > 0 {
			b.WriteByte(',')
		}
		if v == nil {
			b.WriteString("NULL")
		} else {
			quoteElement(&b, *v)
		}
	}
	b.WriteByte('}')
	return b.String()
}

// quoteElement writes v as a quoted element of an array's text form.
func quoteElement(b *strings.Builder, v string) {
	b.WriteByte('"')
	for j := 0; j < len(v); j++ {
		if v[j] == '"' || v[j] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[j])
	}
	b.WriteByte('"')
}

// intArray is the text form of a PostgreSQL array of the integers.
func intArray[I ~int | ~int32 | ~int64](values []I) string {
	b := []byte{'{'}
	for i, v := range values {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(v), 10)
	}
	return string(append(b, '}'))
}

// boolArray is the text form of a PostgreSQL array of the booleans.
func boolArray(values []bool) string {
	b := []byte{'{'}
	for i, v := range values {
		if i > 0 {
			b = append(b, ',')
		}
		if v {
			b = append(b, 't')
		} else {
			b = append(b, 'f')
		}
	}
	return string(append(b, '}'))
}
