package db

import "github.com/google/uuid"

// NewID returns the id of a row the worker writes to user_events: a
// version 7 UUID, whose leading 48 bits are the Unix time in milliseconds.
// Still a uuid, as Hogsend's rows are, but consecutive inserts land
// together at the right edge of the primary-key index instead of on a
// random page of it.
func NewID() string {
	return uuid.Must(uuid.NewV7()).String()
}
