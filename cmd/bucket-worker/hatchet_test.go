package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A Hatchet started afresh between the worker's probe and its registration
// refuses the registration with Unauthenticated, wrapped by the SDK and by
// the worker: the worker then says its token is rejected.
func TestRejectsToken(t *testing.T) {
	refused := fmt.Errorf("creating the Hatchet worker: %w",
		fmt.Errorf("could not create workflow bucket-reconcile: %w", status.Error(codes.Unauthenticated, "invalid auth token")))
	require.True(t, rejectsToken(refused))
	gone := fmt.Errorf("creating the Hatchet worker: %w", status.Error(codes.Unavailable, "connection refused"))
	require.False(t, rejectsToken(gone), "a Hatchet that went away is waited for")
	require.False(t, rejectsToken(errors.New("invalid auth token")), "only the gRPC code says it")
}
