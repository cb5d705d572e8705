// Package db holds every SQL statement of the worker: the embedded
// migrations, one bun model and its queries per table, and the compiler
// that turns bucket criteria into SQL predicates for the set-based sweeps.
//
// Functions take a bun.IDB so that they compose inside one transaction
// (opened by the caller with bun's RunInTx; the engine's tasks.transact
// runs every batch of transitions), and
// take every business timestamp as a parameter: "now" comes from the
// caller's clock, never from now() in SQL.
package db
