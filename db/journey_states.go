package db

import (
	"encoding/json"
	"time"

	"github.com/uptrace/bun"
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
