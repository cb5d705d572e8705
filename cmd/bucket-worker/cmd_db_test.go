package main

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

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

	// round takes n connections at once and returns their backends' pids.
	round := func() map[int]bool {
		var (
			mu   sync.Mutex
			pids = map[int]bool{}
			held sync.WaitGroup
			all  = make(chan struct{})
			done sync.WaitGroup
		)
		held.Add(n)
		for range n {
			done.Go(func() {
				var pid int
				c, err := conn.Conn(ctx)
				if err == nil {
					defer c.Close()
					err = c.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&pid)
				}
				if err != nil {
					t.Error(err)
				} else {
					mu.Lock()
					pids[pid] = true
					mu.Unlock()
				}
				held.Done()
				<-all // every connection is out of the pool at once
			})
		}
		held.Wait()
		close(all)
		done.Wait()
		return pids
	}
	first := round()
	require.Len(t, first, n)
	require.Equal(t, n, conn.Stats().Idle, "every connection stays open while idle")
	require.Equal(t, first, round(), "the second round reuses the first round's backends")
	require.Zero(t, conn.Stats().MaxIdleClosed)
}
