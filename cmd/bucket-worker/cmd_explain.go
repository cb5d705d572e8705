package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bucketworker/bucket-worker/tasks"
)

// runExplain says why a user is or is not in a bucket, and what the next
// sweep will do.
func runExplain(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("explain")
	user := fs.String("user", "", "user id (required)")
	bucketID := fs.String("bucket", "", "bucket id (required)")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" || *bucketID == "" {
		return usageError{"--user and --bucket are required"}
	}
	e, closeEngine, err := openEngine(ctx, env, offline)
	if err != nil {
		return err
	}
	defer closeEngine()
	ex, err := tasks.Explain(ctx, e.deps, *user, *bucketID)
	if err != nil {
		return usageIfInvalid(err)
	}
	if *asJSON {
		return writeJSON(env.stdout, ex)
	}
	w := env.stdout
	verdict := map[bool]string{true: "hold", false: "do not hold"}[ex.Verdict]
	member := map[bool]string{true: "is a member", false: "is not a member"}[ex.Member]
	fmt.Fprintf(w, "user %s %s of %s; the criteria %s at %s\n", ex.UserID, member, ex.BucketID, verdict, ex.At.UTC().Format(time.RFC3339))
	if ex.Erased {
		fmt.Fprintln(w, "the user is erased: no path touches them")
	}
	if !ex.RuntimeEnabled {
		fmt.Fprintln(w, "the bucket is switched off at runtime")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nLEAF\tCONDITION\tOBSERVED\tRESULT")
	for _, l := range ex.Leaves {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", l.Path, l.Condition, observed(l), l.Result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, b := range ex.Branches {
		fmt.Fprintf(w, "%s (%s) is %v, decided by %s\n", b.Path, b.Operator, b.Result, strings.Join(b.DecidedBy, ", "))
	}
	if m := ex.Membership; m != nil {
		fmt.Fprintf(w, "membership %s: entered %s (epoch %d, %s)", m.ID, m.EnteredAt.UTC().Format(time.RFC3339), m.EntryCount, m.Source)
		if m.ExpiresAt != nil {
			fmt.Fprintf(w, ", expires %s", m.ExpiresAt.UTC().Format(time.RFC3339))
		}
		if m.MaxDwellAt != nil {
			fmt.Fprintf(w, ", maxDwell at %s", m.MaxDwellAt.UTC().Format(time.RFC3339))
		}
		if m.MinDwellUntil != nil {
			fmt.Fprintf(w, ", held by minDwell until %s", m.MinDwellUntil.UTC().Format(time.RFC3339))
		}
		fmt.Fprintln(w)
		for _, v := range m.Dwell {
			fmt.Fprintf(w, "dwell %s (%s, for %s): ", v.Label, v.Schedule, strings.Join(v.Journeys, ", "))
			if v.LastFiredAt != nil {
				fmt.Fprintf(w, "last fired %s, ", v.LastFiredAt.UTC().Format(time.RFC3339))
			}
			if v.NextAt != nil {
				fmt.Fprintf(w, "next due %s\n", v.NextAt.UTC().Format(time.RFC3339))
			} else {
				fmt.Fprintln(w, "fired for this membership")
			}
		}
	}
	fmt.Fprintf(w, "next sweep: %s", ex.Next)
	if ex.NextAt != nil {
		fmt.Fprintf(w, " at %s", ex.NextAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(w, " (%s)\n", ex.NextReason)
	return nil
}

// observed renders what a leaf saw in one line.
func observed(l tasks.LeafVerdict) string {
	o := l.Observed
	stamp := func(v any) string {
		if t, ok := v.(time.Time); ok {
			return t.UTC().Format(time.RFC3339)
		}
		return "open"
	}
	if l.Type == "bucket" {
		if l.Observed["member"] != true {
			return "no active membership"
		}
		return fmt.Sprintf("member since %s (row %v)", stamp(l.Observed["enteredAt"]), l.Observed["rowId"])
	}
	if l.Type == "property" {
		s := "absent"
		if o["present"] != false {
			s = fmt.Sprintf("%v (%v)", o["value"], o["jsonType"])
		}
		if _, relative := o["time"]; relative {
			if t, ok := o["time"].(time.Time); ok {
				s += " = " + t.UTC().Format(time.RFC3339Nano)
			} else {
				s += ", not a time"
			}
			s += fmt.Sprintf("; window %s … %s", stamp(o["from"]), stamp(o["to"]))
		}
		return s
	}
	s := fmt.Sprintf("%v event(s)", o["count"])
	if in, ok := o["inWindow"]; ok {
		s = fmt.Sprintf("%v of %v event(s) passed where", o["count"], in)
	}
	if cutoff, ok := o["cutoff"].(time.Time); ok {
		s += " since " + cutoff.UTC().Format(time.RFC3339)
	}
	if fed, ok := o["fed"]; ok {
		if v := o["aggregate"]; v != nil {
			s += fmt.Sprintf(", aggregate %v over %v value(s)", v, fed)
		} else {
			s += ", no numeric value"
		}
	}
	if newest, ok := o["newest"].(*time.Time); ok && newest != nil {
		s += ", last " + newest.UTC().Format(time.RFC3339)
	}
	return s
}
