package db

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Contact is a row of contacts. ExternalID is the user key.
type Contact struct {
	bun.BaseModel `bun:"table:contacts,alias:c"`

	ID             string          `bun:"id,pk,type:uuid,nullzero,default:gen_random_uuid()"`
	OrganizationID *string         `bun:"organization_id"`
	ExternalID     *string         `bun:"external_id"`
	Email          *string         `bun:"email"`
	Properties     json.RawMessage `bun:"properties,type:jsonb"`
	Timezone       *string         `bun:"timezone"`
	FirstSeenAt    time.Time       `bun:"first_seen_at,nullzero,notnull,default:now()"`
	LastSeenAt     time.Time       `bun:"last_seen_at,nullzero,notnull,default:now()"`
	DeletedAt      *time.Time      `bun:"deleted_at"`
	CreatedAt      time.Time       `bun:"created_at,nullzero,notnull,default:now()"`
	UpdatedAt      time.Time       `bun:"updated_at,nullzero,notnull,default:now()"`
}

// PropertyMap decodes the contact's properties. Anything but a JSON object
// reads as no properties.
func (c *Contact) PropertyMap() map[string]any {
	props := map[string]any{}
	if len(c.Properties) > 0 {
		if err := json.Unmarshal(c.Properties, &props); err != nil {
			return map[string]any{}
		}
	}
	return props
}

// ContactByUser returns the user's contact, soft-deleted or not (the live
// one first), or nil when the user has none.
func ContactByUser(ctx context.Context, idb bun.IDB, userID string) (*Contact, error) {
	var rows []Contact
	err := idb.NewSelect().Model(&rows).
		Where("c.external_id = ?", userID).
		OrderExpr("c.deleted_at IS NOT NULL, c.updated_at DESC").
		Limit(1).
		Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the contact of user %q: %w", userID, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	return &rows[0], nil
}

// InsertContact inserts a contact row as given.
func InsertContact(ctx context.Context, idb bun.IDB, c *Contact) error {
	if _, err := idb.NewInsert().Model(c).Returning("id").Exec(ctx); err != nil {
		return fmt.Errorf("inserting a contact: %w", err)
	}
	return nil
}
