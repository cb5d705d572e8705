// Package db holds every SQL statement of the worker: the embedded
// migrations, one bun model and its queries per table, and the compiler
// that turns bucket criteria into SQL predicates for the set-based sweeps.
//
// Functions take a bun.IDB so that they compose inside one transaction
// (opened by the caller with bun's RunInTx; the engine's tasks.transact
// runs every batch of transitions), and
// take every business timestamp as a parameter: "now" comes from the
// caller's clock, never from now() in SQL.
//
// bun writes a statement's values into its text. The few statements every
// ingest runs send them as parameters instead, and each connection
// prepares them once (prepared.go), so that PostgreSQL stops planning them
// at every run.
package db
