package db_test

import (
	"context"
	neturl "net/url"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestSessionsRunWithoutJIT opens the database as the worker does, on a
// server and a database that compile expressions (jit = on) and print
// doubles with extra digits: the worker's sessions do neither, and a URL
// that asks for jit gets it. extra_float_digits is the worker's own
// whatever the URL says: the compiled sums depend on it.
func TestSessionsRunWithoutJIT(t *testing.T) {
	t.Parallel()
	admin, url := dbtest.New(t)
	ctx := context.Background()
	var name string
	require.NoError(t, admin.QueryRowContext(ctx, "SELECT current_database()").Scan(&name))
	for _, setting := range []string{"jit = on", "extra_float_digits = 3"} {
		_, err := admin.NewRaw("ALTER DATABASE ? SET "+setting, bun.Ident(name)).Exec(ctx)
		require.NoError(t, err)
	}

	settings := func(url string) (jit, digits string) {
		conn, err := db.Open(ctx, url)
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.QueryRowContext(ctx, "SELECT current_setting('jit'), current_setting('extra_float_digits')").Scan(&jit, &digits))
		return jit, digits
	}
	jit, digits := settings(url)
	require.Equal(t, "off", jit)
	require.Equal(t, "1", digits)

	u, err := neturl.Parse(url)
	require.NoError(t, err)
	q := u.Query()
	q.Set("jit", "on")
	q.Set("extra_float_digits", "3")
	u.RawQuery = q.Encode()
	jit, digits = settings(u.String())
	require.Equal(t, "on", jit, "the URL's jit")
	require.Equal(t, "1", digits, "the worker's extra_float_digits")
}
