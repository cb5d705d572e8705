// Package e2e drives the built worker against a real Hatchet server and a
// real Postgres. Its tests carry the build tag e2e and expect the local
// stack's environment (scripts/stack up; scripts/test runs them).
package e2e
