package db

import (
	"context"
	"embed"
	"fmt"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"
)

// MigrationFiles holds the embedded SQL migrations.
//
//go:embed migrations/*.sql
var MigrationFiles embed.FS

// The migration bookkeeping tables are the worker's own, never Hogsend's.
const (
	migrationsTable     = "bucket_worker_migrations"
	migrationLocksTable = "bucket_worker_migration_locks"
	// migrationLockKey is the advisory lock that serialises migrations of
	// several workers booting at once.
	migrationLockKey = "bucket_worker_migrations"
)

// Migrate applies the migrations that the database lacks, under a lock, and
// returns their names. It is safe on an empty database, on one migrated
// before, and on one that holds Hogsend's own tables.
func Migrate(ctx context.Context, db *bun.DB) ([]string, error) {
	migrations, err := embeddedMigrations()
	if err != nil {
		return nil, err
	}

	// A session-level advisory lock on a connection of its own: a second
	// worker waits here until the first one is done, then finds nothing to do.
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("taking a connection for the migration lock: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(hashtext(?))", migrationLockKey); err != nil {
		return nil, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(hashtext(?))", migrationLockKey) //nolint:errcheck // closing the connection releases it too

	migrator := migrate.NewMigrator(db, migrations,
		migrate.WithTableName(migrationsTable),
		migrate.WithLocksTableName(migrationLocksTable),
		migrate.WithMarkAppliedOnSuccess(true),
	)
	if err := migrator.Init(ctx); err != nil {
		return nil, fmt.Errorf("creating the migration tables: %w", err)
	}
	group, err := migrator.Migrate(ctx)
	if err != nil {
		return nil, fmt.Errorf("applying migrations: %w", err)
	}
	var names []string
	for _, m := range group.Migrations {
		names = append(names, m.Name)
	}
	return names, nil
}

// MigrationNames returns the names of the embedded migrations, in order:
// the versions Migrate records as applied.
func MigrationNames() ([]string, error) {
	migrations, err := embeddedMigrations()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range migrations.Sorted() {
		names = append(names, m.Name)
	}
	return names, nil
}

func embeddedMigrations() (*migrate.Migrations, error) {
	migrations := migrate.NewMigrations()
	if err := migrations.Discover(MigrationFiles); err != nil {
		return nil, fmt.Errorf("reading embedded migrations: %w", err)
	}
	return migrations, nil
}
