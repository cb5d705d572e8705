// Package buckets is the definition of buckets, free of any database or
// Hatchet: the bucket and condition types; Load, which reads and validates
// the bucket files of a definitions folder (contract §2, §3) and reports
// every problem with its file and path; the canonical criteria and their
// hash (§8); the shape analysis the engine plans by — time-based, the
// absence and relative-date shapes, the window a join arms; the immutable
// Registry the worker builds once at boot; and the one evaluator of
// criteria every path decides with, Evaluate, with Explain as its trace.
//
// Numbers follow Hogsend, which reads JSON as JavaScript does: DecodeJSON
// turns every number into the nearest double, beyond the range into ±Inf.
// Sums and averages of event properties (§3.5) are exact over those
// doubles' shortest decimals; relative dates (§3.6) read a property with
// ParseTime.
package buckets
