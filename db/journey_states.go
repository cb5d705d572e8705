package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// JourneyState is a row of journey_states: one run of a journey for a user,
// owned by the journey runner. The worker only marks rows exited.
type JourneyState struct {
	bun.BaseModel `bun:"table:journey_states,alias:js"`

	ID             string          `bun:"id,pk,type:uuid,nullzero,default:gen_random_uuid()"`
	OrganizationID *string         `bun:"organization_id"`
	UserID         string          `bun:"user_id,notnull"`
	UserEmail      string          `bun:"user_email,notnull"`
	JourneyID      string          `bun:"journey_id,notnull"`
	CurrentNodeID  string          `bun:"current_node_id,notnull"`
	Status         string          `bun:"status,nullzero,notnull"`
	HatchetRunID   *string         `bun:"hatchet_run_id"`
	Context        json.RawMessage `bun:"context,type:jsonb"`
	ErrorMessage   *string         `bun:"error_message"`
	EntryCount     int             `bun:"entry_count,nullzero,notnull"`
	CompletedAt    *time.Time      `bun:"completed_at"`
	ExitedAt       *time.Time      `bun:"exited_at"`
	DeletedAt      *time.Time      `bun:"deleted_at"`
	CreatedAt      time.Time       `bun:"created_at,nullzero,notnull,default:now()"`
	UpdatedAt      time.Time       `bun:"updated_at,nullzero,notnull,default:now()"`
}

// ExitJourneys marks exited the users' active or waiting runs of the
// journeys and returns the rows it changed (contract §5.6).
func ExitJourneys(ctx context.Context, idb bun.IDB, userIDs, journeyIDs []string, now time.Time) ([]JourneyState, error) {
	if len(userIDs) == 0 || len(journeyIDs) == 0 {
		return nil, nil
	}
	var rows []JourneyState
	err := idb.NewUpdate().TableExpr("journey_states AS js").
		Set("status = 'exited'").
		Set("exited_at = ?", now).
		Set("updated_at = ?", now).
		Where("js.user_id = ANY(?)", pgdialect.Array(userIDs)).
		Where("js.journey_id = ANY(?)", pgdialect.Array(journeyIDs)).
		Where("js.status IN ('active', 'waiting') AND js.deleted_at IS NULL").
		Returning("js.id, js.user_id, js.journey_id, js.hatchet_run_id").
		Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("exiting journeys %v: %w", journeyIDs, err)
	}
	return rows, nil
}
