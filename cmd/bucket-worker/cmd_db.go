package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
)

// openDatabase loads the configuration and connects.
func openDatabase(ctx context.Context, env *environment) (config, *bun.DB, error) {
	cfg, err := loadConfig(env.getenv, env.flags)
	if err != nil {
		return cfg, nil, err
	}
	conn, err := connect(ctx, cfg)
	return cfg, conn, err
}

// connect opens the database of the configuration; a malformed URL is an
// error naming the variable.
func connect(ctx context.Context, cfg config) (*bun.DB, error) {
	conn, err := db.Open(ctx, cfg.DatabaseURL)
	if errors.Is(err, db.ErrInvalidURL) {
		return nil, fmt.Errorf("DATABASE_URL (or --database-url): %w", err)
	}
	if err != nil {
		return nil, err
	}
	db.SetMaxConns(conn, cfg.DatabaseMaxConns)
	return conn, nil
}

// runMigrate applies the migrations and exits.
func runMigrate(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("migrate")
	if err := parse(fs, args); err != nil {
		return err
	}
	_, conn, err := openDatabase(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	applied, err := db.Migrate(ctx, conn)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(env.stdout, "database is up to date")
		return nil
	}
	fmt.Fprintf(env.stdout, "applied %d migration(s): %s\n", len(applied), strings.Join(applied, ", "))
	return nil
}

type listOutput struct {
	Buckets []listBucket `json:"buckets"`
}

type listBucket struct {
	ID             string   `json:"id"`
	Name           string   `json:"name"`
	Enabled        bool     `json:"enabled"`
	RuntimeEnabled bool     `json:"runtimeEnabled"`
	Size           int64    `json:"size"`
	Entered        int64    `json:"entered"`
	Left           int64    `json:"left"`
	TimeBased      bool     `json:"timeBased"`
	FastExpiry     bool     `json:"fastExpiry"`
	ReconcileEvery string   `json:"reconcileEvery,omitempty"`
	FeedsJourneys  []string `json:"feedsJourneys"`
	// DwellReactions are the bucket's dwell schedules that enabled
	// journeys react to (contract §14).
	DwellReactions []listDwell `json:"dwellReactions"`
}

type listDwell struct {
	Label    string   `json:"label"`
	Schedule string   `json:"schedule"`
	Journeys []string `json:"journeys"`
}

// openDefinitions connects to the database and loads the definitions, all
// valid, for a command that reads membership rows by bucket.
func openDefinitions(ctx context.Context, env *environment) (*definitions, *bun.DB, error) {
	cfg, conn, err := openDatabase(ctx, env)
	if err != nil {
		return nil, nil, err
	}
	defs, err := loadDefinitions(cfg)
	if err == nil {
		err = defs.report.Err()
		if err != nil {
			err = fmt.Errorf("invalid definitions (see bucket-worker validate): %w", err)
		}
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return defs, conn, nil
}

// runList prints every loaded bucket with its switches, counts and the
// journeys its events feed.
func runList(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("list")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	defs, conn, err := openDefinitions(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	stats, err := db.MembershipStats(ctx, conn)
	if err != nil {
		return err
	}
	configs, err := db.BucketConfigs(ctx, conn)
	if err != nil {
		return err
	}
	out := listOutput{Buckets: []listBucket{}}
	for _, b := range defs.buckets {
		dwell := []listDwell{}
		for _, r := range defs.journeyRegistry.DwellReactions(b.ID) {
			dwell = append(dwell, listDwell{Label: r.Label, Schedule: r.String(), Journeys: r.Journeys})
		}
		runtimeEnabled := true
		if c, ok := configs[b.ID]; ok {
			runtimeEnabled = c.Enabled
		}
		s := stats[b.ID]
		out.Buckets = append(out.Buckets, listBucket{
			ID: b.ID, Name: b.Name, Enabled: defs.enabled(b), RuntimeEnabled: runtimeEnabled,
			Size: s.Size, Entered: s.Entered, Left: s.Left, TimeBased: b.TimeBased, FastExpiry: b.FastExpiry,
			ReconcileEvery: b.ReconcileEvery.String(), FeedsJourneys: append([]string{}, defs.journeyRegistry.Feeding(b)...),
			DwellReactions: dwell,
		})
	}
	if *asJSON {
		return writeJSON(env.stdout, out)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUCKET\tENABLED\tRUNTIME\tSIZE\tENTERED\tLEFT\tTIME-BASED\tFAST-EXPIRY\tJOURNEYS\tDWELL")
	for _, b := range out.Buckets {
		var dwell []string
		for _, r := range b.DwellReactions {
			dwell = append(dwell, r.Schedule)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", b.ID, yesNo(b.Enabled), yesNo(b.RuntimeEnabled),
			b.Size, b.Entered, b.Left, yesNo(b.TimeBased), yesNo(b.FastExpiry), strings.Join(b.FeedsJourneys, ","), strings.Join(dwell, ","))
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

type membersOutput struct {
	Members []memberRow `json:"members"`
}

type memberRow struct {
	ID         string  `json:"id"`
	UserID     string  `json:"userId"`
	UserEmail  string  `json:"userEmail"`
	Status     string  `json:"status"`
	EnteredAt  *string `json:"enteredAt"`
	LeftAt     *string `json:"leftAt"`
	EntryCount int     `json:"entryCount"`
	Source     string  `json:"source"`
	ExpiresAt  *string `json:"expiresAt"`
	MaxDwellAt *string `json:"maxDwellAt"`
	// DwellState is when the membership last fired each dwell schedule,
	// and DwellAnchorAt when a backfill dated its dwell clock (contract §14).
	DwellState    json.RawMessage `json:"dwellState,omitempty"`
	DwellAnchorAt *string         `json:"dwellAnchorAt,omitempty"`
}

func newMemberRow(m db.Membership) memberRow {
	row := memberRow{
		ID: m.ID, UserID: m.UserID, UserEmail: deref(m.UserEmail), Status: m.Status,
		EnteredAt: rfc3339(&m.EnteredAt), LeftAt: rfc3339(m.LeftAt), EntryCount: m.EntryCount,
		Source: deref(m.Source), ExpiresAt: rfc3339(m.ExpiresAt), MaxDwellAt: rfc3339(m.MaxDwellAt),
		DwellAnchorAt: rfc3339(m.DwellAnchorAt),
	}
	if len(m.DwellStamps()) > 0 {
		row.DwellState = m.DwellState
	}
	return row
}

// runMembers prints the membership rows of one bucket, newest first.
func runMembers(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("members")
	bucketID := fs.String("bucket", "", "bucket id (required)")
	status := fs.String("status", db.StatusActive, "active or left")
	limit := fs.Int("limit", 100, "at most this many rows")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *bucketID == "":
		return usageError{"--bucket is required"}
	case *status != db.StatusActive && *status != db.StatusLeft:
		return usageError{fmt.Sprintf("--status %q: use active or left", *status)}
	case *limit <= 0:
		return usageError{"--limit must be positive"}
	}
	_, conn, err := openDatabase(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := db.ListMemberships(ctx, conn, db.MembershipFilter{BucketID: *bucketID, Status: *status, Limit: *limit})
	if err != nil {
		return err
	}
	out := membersOutput{Members: []memberRow{}}
	for _, m := range rows {
		out.Members = append(out.Members, newMemberRow(m))
	}
	if *asJSON {
		return writeJSON(env.stdout, out)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tEMAIL\tSTATUS\tENTERED\tLEFT\tEPOCH\tSOURCE\tEXPIRES\tMAX-DWELL")
	for _, m := range out.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.UserID, m.UserEmail, m.Status,
			deref(m.EnteredAt), deref(m.LeftAt), m.EntryCount, m.Source, deref(m.ExpiresAt), deref(m.MaxDwellAt))
	}
	return tw.Flush()
}
