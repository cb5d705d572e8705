package main

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/buckets/definition"
	"github.com/bucketworker/bucket-worker/buckets/destination"
	"github.com/bucketworker/bucket-worker/journeys"
)

// definitions is everything loaded from DEFINITIONS_DIR: all valid
// definitions, the registries of the enabled ones, and the load's report.
type definitions struct {
	buckets  []*buckets.Bucket
	journeys []*journeys.Journey
	// destinations are the outbound webhooks; enabledDestinations those
	// that are switched on (contract §15.2).
	destinations        []*destination.Webhook
	enabledDestinations []*destination.Webhook
	bucketRegistry      *buckets.Registry
	journeyRegistry     *journeys.Registry
	report              definition.Report
	// dir is the folder the definitions were read from.
	dir string
	// notices are boot warnings outside any file, such as an
	// ENABLED_BUCKETS id that matches nothing.
	notices []string
}

// loadDefinitions reads and validates the definitions and builds the two
// registries. Errors are in the report; the caller decides what they stop.
func loadDefinitions(cfg config) (*definitions, error) {
	if info, err := os.Stat(cfg.DefinitionsDir); err != nil || !info.IsDir() {
		return nil, fmt.Errorf("definitions folder %q: not a readable folder (set DEFINITIONS_DIR or --definitions)", cfg.DefinitionsDir)
	}
	fsys := os.DirFS(cfg.DefinitionsDir)
	d := &definitions{dir: cfg.DefinitionsDir}
	bs, bucketReport := buckets.Load(fsys)
	js, journeyReport := journeys.Load(fsys)
	ws, destinationReport := destination.Load(fsys)
	d.buckets, d.journeys, d.destinations = bs, js, ws
	d.report.Errors = slices.Concat(bucketReport.Errors, journeyReport.Errors, destinationReport.Errors)
	d.report.Warnings = slices.Concat(bucketReport.Warnings, journeyReport.Warnings, destinationReport.Warnings)

	known := map[string]bool{}
	for _, b := range bs {
		known[b.ID] = true
	}
	d.report.Errors = append(d.report.Errors, journeys.CheckReactions(js, func(id string) bool { return known[id] })...)
	d.report.Errors = append(d.report.Errors, destination.CheckBuckets(ws, func(id string) bool { return known[id] })...)
	for _, w := range ws {
		if w.Enabled {
			d.enabledDestinations = append(d.enabledDestinations, w)
		}
	}
	for _, j := range js {
		rules := append([]journeys.Rule{j.Trigger}, j.ExitOn...)
		for _, r := range rules {
			for _, prefix := range []string{"bucket:entered:", "bucket:left:"} {
				if id, ok := strings.CutPrefix(r.Event, prefix); ok && !known[id] {
					d.report.Warnings = append(d.report.Warnings, definition.Error{
						File: j.File, Message: fmt.Sprintf("journey %q listens to %q, but no bucket has id %q", j.ID, r.Event, id),
					})
				}
			}
		}
	}

	enabledBuckets, warnings, errs := buckets.Enabled(bs, cfg.EnabledBuckets)
	d.notices = append(d.notices, warnings...)
	d.report.Errors = append(d.report.Errors, errs...)
	enabledJourneys, warnings := journeys.Enabled(js, cfg.EnabledJourneys)
	d.notices = append(d.notices, warnings...)
	d.bucketRegistry = buckets.NewRegistry(enabledBuckets)
	d.journeyRegistry = journeys.NewRegistry(enabledJourneys)
	return d, nil
}

// enabled reports whether the bucket is in the registry.
func (d *definitions) enabled(b *buckets.Bucket) bool {
	_, ok := d.bucketRegistry.Get(b.ID)
	return ok
}
