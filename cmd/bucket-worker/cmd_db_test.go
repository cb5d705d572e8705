package main

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestPoolKeepsItsConnections holds DATABASE_MAX_CONNS connections at once,
// twice: the second round must find the backends of the first. A pool
// whose idle bound is below its open bound (database/sql's, unless raised)
// closes the extra connections when they come back, and a busy worker
// then starts a backend for nearly every statement.
func TestPoolKeepsItsConnections(t *testing.T) {
	t.Parallel()
	_, url := dbtest.New(t)
	ctx := context.Background()
	const n = 12 // above db.DefaultMaxConns, the bound Open starts with
	conn, err := connect(ctx, config{DatabaseURL: url, DatabaseMaxConns: n})
	require.NoError(t, err)
	defer conn.Close()

	// round takes n connections out of the pool at once, returns them, and
	// returns their backends' pids.
	round := func() map[int]bool {
		pids := map[int]bool{}
		var held []bun.Conn
		for range n {
			c, err := conn.Conn(ctx)
			require.NoError(t, err)
			held = append(held, c)
			var pid int
			require.NoError(t, c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid))
			pids[pid] = true
		}
		for _, c := range held {
			require.NoError(t, c.Close())
		}
		return pids
	}
	first := round()
	require.Len(t, first, n)
	require.Equal(t, n, conn.Stats().Idle, "every connection stays open while idle")
	require.Equal(t, first, round(), "the second round reuses the first round's backends")
	require.Zero(t, conn.Stats().MaxIdleClosed)
}
