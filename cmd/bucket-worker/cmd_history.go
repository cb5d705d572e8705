package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"text/tabwriter"

	"github.com/bucketworker/bucket-worker/db"
)

type historyOutput struct {
	Memberships []historyMembership `json:"memberships"`
	Events      []historyEvent      `json:"events"`
}

type historyMembership struct {
	BucketID string `json:"bucketId"`
	memberRow
}

type historyEvent struct {
	Event          string          `json:"event"`
	IdempotencyKey string          `json:"idempotencyKey"`
	OccurredAt     *string         `json:"occurredAt"`
	Properties     json.RawMessage `json:"properties"`
	Dispatched     bool            `json:"dispatched"`
}

// runHistory prints every membership row and transition event of a user,
// oldest first.
func runHistory(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("history")
	user := fs.String("user", "", "user id (required)")
	bucketID := fs.String("bucket", "", "only this bucket")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return usageError{"--user is required"}
	}
	_, conn, err := openDatabase(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	rows, err := db.ListMemberships(ctx, conn, db.MembershipFilter{UserID: *user, BucketID: *bucketID})
	if err != nil {
		return err
	}
	slices.Reverse(rows) // oldest first
	events, err := db.UserTransitions(ctx, conn, *user, *bucketID)
	if err != nil {
		return err
	}
	out := historyOutput{Memberships: []historyMembership{}, Events: []historyEvent{}}
	for _, m := range rows {
		out.Memberships = append(out.Memberships, historyMembership{BucketID: m.BucketID, memberRow: newMemberRow(m)})
	}
	for _, e := range events {
		out.Events = append(out.Events, historyEvent{Event: e.Event, IdempotencyKey: deref(e.IdempotencyKey),
			OccurredAt: rfc3339(&e.OccurredAt), Properties: e.Properties, Dispatched: e.Dispatched})
	}
	if *asJSON {
		return writeJSON(env.stdout, out)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUCKET\tSTATUS\tEPOCH\tENTERED\tLEFT\tSOURCE")
	for _, m := range out.Memberships {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", m.BucketID, m.Status, m.EntryCount, deref(m.EnteredAt), deref(m.LeftAt), m.Source)
	}
	fmt.Fprintln(tw, "\nOCCURRED\tEVENT\tKEY\tSOURCE\tREASON\tPUSH")
	for _, e := range out.Events {
		var props struct {
			Source, Reason string
			DwellCount     int
		}
		if err := json.Unmarshal(e.Properties, &props); err != nil {
			props.Source = "?" // not a transition's properties
		}
		if props.DwellCount > 0 {
			props.Reason = fmt.Sprintf("dwell #%d", props.DwellCount)
		}
		push := "pending"
		if e.Dispatched {
			push = "dispatched"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", deref(e.OccurredAt), e.Event, e.IdempotencyKey, props.Source, props.Reason, push)
	}
	return tw.Flush()
}
