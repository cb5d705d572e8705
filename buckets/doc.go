// Package buckets is the definition of buckets, free of any database or
// Hatchet: the bucket and condition types; Load, which reads and validates
// the bucket files of a definitions folder (contract §2, §3) and reports
// every problem with its file and path; the canonical criteria and their
// hash (§8); the shape analysis the engine plans by — time-based, the
// absence and relative-date shapes, the window a join arms; the immutable
// Registry the worker builds once at boot; and Evaluate, the Go evaluator
// of criteria, with Explain as its trace.
//
// No production path decides a membership with Evaluate: ingest, the
// sweep, expiry timers and backfills all decide with the SQL the package
// db compiles from the same criteria, in the transaction that applies the
// decision. Evaluate is the reference that SQL is held to — the
// conformance table and a randomized differential test run every case
// through both and require the same answer — and Explain is what the
// explain command shows: the reading of each leaf, in words a person can
// check.
//
// Numbers follow Hogsend, which reads JSON as JavaScript does: DecodeJSON
// turns every number into the nearest double, beyond the range into ±Inf.
// Sums and averages of event properties (§3.5) are exact over those
// doubles' shortest decimals; relative dates (§3.6) read a property with
// ParseTime.
package buckets
