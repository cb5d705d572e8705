package db

import (
	"encoding/json"
	"time"

	"github.com/uptrace/bun"
)

// OutboxEvent is a row of bucket_event_outbox: one Hatchet push, written in
// the transaction of the transition it announces and dispatched after commit.
type OutboxEvent struct {
	bun.BaseModel `bun:"table:bucket_event_outbox,alias:o"`

	ID                 int64           `bun:"id,pk,autoincrement"`
	EventKey           string          `bun:"event_key,notnull"`
	Payload            json.RawMessage `bun:"payload,type:jsonb,notnull"`
	AdditionalMetadata json.RawMessage `bun:"additional_metadata,type:jsonb"`
	IdempotencyKey     *string         `bun:"idempotency_key"`
	CreatedAt          time.Time       `bun:"created_at,nullzero,notnull,default:now()"`
	AvailableAt        time.Time       `bun:"available_at,nullzero,notnull,default:now()"`
	Attempts           int             `bun:"attempts,notnull"`
	LastError          *string         `bun:"last_error"`
	DispatchedAt       *time.Time      `bun:"dispatched_at"`
}
