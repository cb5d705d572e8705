package db

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// Schema is what the worker finds of the database's shape once, at boot,
// where the databases it runs against differ: a Hogsend ≥ 0.59 database
// keys memberships and events by contact as well as by user (contract
// §14.1). The worker never creates those columns; it writes them where
// they exist, so that Hogsend's readers, which go by contact, see its rows.
type Schema struct {
	// MembershipContactID: bucket_memberships has contact_id. Each
	// membership the worker inserts then carries the user's live contact.
	MembershipContactID bool
	// EventContactID: user_events has contact_id. Each event the worker
	// stores (ingested or emitted) then carries the user's live contact.
	EventContactID bool
	// UniqueContactEmail: a unique index holds a live contact's email
	// (Hogsend's contacts_email_unique_idx, on lower(email)). An email
	// another contact holds is then not written (UpsertContacts).
	UniqueContactEmail bool
}

// ReadSchema finds the Schema of the database, in the connection's
// current schema.
func ReadSchema(ctx context.Context, idb bun.IDB) (Schema, error) {
	var tables []string
	err := idb.NewSelect().TableExpr("information_schema.columns").
		Column("table_name").
		Where("table_schema = current_schema()").
		Where("column_name = 'contact_id'").
		Where("table_name IN ('bucket_memberships', 'user_events')").
		Scan(ctx, &tables)
	if err != nil {
		return Schema{}, fmt.Errorf("reading the database's schema: %w", err)
	}
	var s Schema
	err = idb.NewSelect().TableExpr("pg_indexes").
		ColumnExpr("count(*) > 0").
		Where("schemaname = current_schema() AND tablename = 'contacts'").
		Where("indexdef LIKE 'CREATE UNIQUE INDEX %' AND indexdef LIKE '%(lower(email))%'").
		Scan(ctx, &s.UniqueContactEmail)
	if err != nil {
		return Schema{}, fmt.Errorf("reading the database's schema: %w", err)
	}
	for _, t := range tables {
		switch t {
		case "bucket_memberships":
			s.MembershipContactID = true
		case "user_events":
			s.EventContactID = true
		}
	}
	return s, nil
}

// liveContactOf is the id of the live contact of the user whose id the SQL
// expression userID holds, or NULL: what a row written for the user
// carries in contact_id.
func liveContactOf(userID string) string {
	return "(SELECT lc.id FROM contacts AS lc WHERE lc.external_id = " + userID + " AND lc.deleted_at IS NULL)"
}
