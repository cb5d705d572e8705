package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/buckets/definition"
	"github.com/bucketworker/bucket-worker/journeys"
)

type validateOutput struct {
	Valid    bool              `json:"valid"`
	Buckets  []validateBucket  `json:"buckets"`
	Journeys []validateJourney `json:"journeys"`
	// Destinations are the outbound webhooks (contract §15.2).
	Destinations []validateDestination `json:"destinations"`
	Errors       []definition.Error    `json:"errors"`
	Warnings     []definition.Error    `json:"warnings"`
}

type validateBucket struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Enabled        bool   `json:"enabled"`
	CriteriaHash   string `json:"criteriaHash"`
	TimeBased      bool   `json:"timeBased"`
	ReconcileJoins bool   `json:"reconcileJoins"`
	FastExpiry     bool   `json:"fastExpiry"`
	EntryLimit     string `json:"entryLimit"`
	// References are the buckets its bucket legs read (contract §13).
	References []string `json:"references"`
}

type validateJourney struct {
	ID      string   `json:"id"`
	Trigger string   `json:"trigger"`
	ExitOn  []string `json:"exitOn"`
	// Dwell is the schedule of a dwell reaction and its bucket (contract §14).
	Dwell *validateDwell `json:"dwell,omitempty"`
}

type validateDwell struct {
	BucketID string `json:"bucketId"`
	Label    string `json:"label"`
	Schedule string `json:"schedule"`
}

type validateDestination struct {
	ID        string   `json:"id"`
	URL       string   `json:"url"`
	Events    []string `json:"events"`
	Buckets   []string `json:"buckets"`
	SecretEnv string   `json:"secretEnv"`
	Enabled   bool     `json:"enabled"`
}

// runValidate loads the definitions without a database and prints a
// summary, or every error; it fails when any definition is invalid.
func runValidate(_ context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("validate")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(env.getenv, env.flags)
	if err != nil {
		return err
	}
	defs, err := loadDefinitions(cfg)
	if err != nil {
		return err
	}
	out := validateOutput{
		Valid:        len(defs.report.Errors) == 0,
		Buckets:      []validateBucket{},
		Journeys:     []validateJourney{},
		Destinations: []validateDestination{},
		Errors:       append([]definition.Error{}, defs.report.Errors...),
		Warnings:     append([]definition.Error{}, defs.report.Warnings...),
	}
	for _, notice := range defs.notices {
		out.Warnings = append(out.Warnings, definition.Error{Message: notice})
	}
	for _, b := range defs.buckets {
		out.Buckets = append(out.Buckets, validateBucket{
			ID: b.ID, Name: b.Name, Enabled: defs.enabled(b), CriteriaHash: b.CriteriaHash,
			TimeBased: b.TimeBased, ReconcileJoins: b.ReconcileJoins, FastExpiry: b.FastExpiry,
			EntryLimit: string(b.EntryLimit), References: append([]string{}, b.References()...),
		})
	}
	for _, j := range defs.journeys {
		v := validateJourney{ID: j.ID, Trigger: j.Trigger.Event, ExitOn: exitEvents(j)}
		if j.Dwell != nil {
			v.Dwell = &validateDwell{BucketID: j.SourceBucketID, Label: j.Dwell.Label, Schedule: j.Dwell.String()}
		}
		out.Journeys = append(out.Journeys, v)
	}
	for _, w := range defs.destinations {
		out.Destinations = append(out.Destinations, validateDestination{ID: w.ID, URL: w.URL, Events: w.Events,
			Buckets: append([]string{}, w.Buckets...), SecretEnv: w.SecretEnv, Enabled: w.Enabled})
	}

	if *asJSON {
		if err := writeJSON(env.stdout, out); err != nil {
			return err
		}
	} else {
		printValidation(env, defs, out)
	}
	if !out.Valid {
		return fmt.Errorf("%d error(s) in the definitions in %s", len(out.Errors), defs.dir)
	}
	return nil
}

func printValidation(env *environment, defs *definitions, out validateOutput) {
	w := env.stdout
	for _, warning := range out.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warning.Error())
	}
	if !out.Valid {
		for _, e := range out.Errors {
			fmt.Fprintf(w, "error: %s\n", e.Error())
		}
		return
	}
	fmt.Fprintf(w, "%d bucket(s), %d journey(s), %d destination(s) in %s are valid\n", len(out.Buckets), len(out.Journeys), len(out.Destinations), defs.dir)
	for _, b := range defs.buckets {
		state := "enabled"
		if !defs.enabled(b) {
			state = "disabled"
		}
		fmt.Fprintf(w, "  bucket  %-24s %-8s %s\n", b.ID, state, buckets.String(b.Criteria))
	}
	for _, j := range defs.journeys {
		fmt.Fprintf(w, "  journey %-24s on %s\n", j.ID, j.Trigger.Event)
	}
	for _, d := range out.Destinations {
		state := "enabled"
		if !d.Enabled {
			state = "disabled"
		}
		fmt.Fprintf(w, "  webhook %-24s %-8s %s → %s\n", d.ID, state, strings.Join(d.Events, ","), d.URL)
	}
}

func exitEvents(j *journeys.Journey) []string {
	events := []string{}
	for _, r := range j.ExitOn {
		events = append(events, r.Event)
	}
	return events
}
