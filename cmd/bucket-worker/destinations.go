package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/buckets/destination"
	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/tasks"
)

// openDestinations builds the destinations of the enabled definitions and
// a deliverer for each (contract §15): a webhook's secret, read from its
// secretEnv, must be a Standard Webhooks secret, or the engine does not
// start. Without POSTHOG_API_KEY, buckets with syncToPostHog are warned
// about once. close stops the senders that hold connections.
func openDestinations(ctx context.Context, env *environment, cfg config, defs *definitions, conn *bun.DB, logger *slog.Logger, now func() time.Time) (
	ds tasks.Destinations, deliverers []*tasks.Deliverer, close func(), err error) {
	var closers []io.Closer
	close = func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}
	for _, w := range defs.enabledDestinations {
		env.keepSecret(w.SecretEnv)
		sender, err := tasks.NewWebhookSender(w, env.getenv(w.SecretEnv))
		if err != nil {
			return ds, nil, close, fmt.Errorf("%s: %w", w.File, err)
		}
		ds.Webhooks = append(ds.Webhooks, w)
		deliverers = append(deliverers, tasks.NewDeliverer(w.ID, sender, conn, logger, now, cfg.DestinationMaxAttempts))
	}
	var syncing []string
	for _, b := range defs.bucketRegistry.All() {
		if b.SyncToPostHog {
			syncing = append(syncing, b.ID)
		}
	}
	switch {
	case cfg.PostHogAPIKey != "":
		sender, err := tasks.NewPostHogSender(cfg.PostHogAPIKey, cfg.PostHogHost)
		if err != nil {
			return ds, nil, close, err
		}
		closers = append(closers, sender)
		ds.PostHog = true
		deliverers = append(deliverers, tasks.NewDeliverer(destination.PostHog, sender, conn, logger, now, cfg.DestinationMaxAttempts))
	case len(syncing) > 0:
		logger.WarnContext(ctx, "buckets have syncToPostHog but POSTHOG_API_KEY is not set: their membership is not sent to PostHog",
			slog.Any("buckets", syncing))
	}
	return ds, deliverers, close, nil
}

type destinationsOutput struct {
	Destinations []destinationRow `json:"destinations"`
}

type destinationRow struct {
	db.DeliveryStats
	Kind    string   `json:"kind"` // webhook or posthog
	URL     string   `json:"url,omitempty"`
	Events  []string `json:"events,omitempty"`
	Buckets []string `json:"buckets,omitempty"`
	Enabled bool     `json:"enabled"`
}

// runDestinations lists the destinations with their deliveries, or, as
// `destinations test ID`, sends one signed webhook.test to a webhook.
func runDestinations(ctx context.Context, env *environment, args []string) error {
	if len(args) > 0 && args[0] == "test" {
		fs := env.newFlagSet("destinations test")
		if err := fs.Parse(args[1:]); err != nil {
			return usageError{err.Error()}
		}
		if fs.NArg() != 1 {
			return usageError{"give exactly one destination id: destinations test ID"}
		}
		return testDestination(ctx, env, fs.Arg(0))
	}
	fs := env.newFlagSet("destinations")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	e, closeEngine, err := openEngine(ctx, env, offline)
	if err != nil {
		return err
	}
	defer closeEngine()
	stats, err := db.DeliveryStatsByDestination(ctx, e.deps.DB)
	if err != nil {
		return err
	}
	out := destinationsOutput{Destinations: []destinationRow{}}
	row := func(id string) destinationRow {
		s := stats[id]
		s.Destination = id
		return destinationRow{DeliveryStats: s}
	}
	for _, w := range e.defs.destinations {
		r := row(w.ID)
		r.Kind, r.URL, r.Events, r.Buckets, r.Enabled = "webhook", w.URL, w.Events, w.Buckets, w.Enabled
		out.Destinations = append(out.Destinations, r)
	}
	if _, used := stats[destination.PostHog]; used || e.deps.Destinations.PostHog {
		r := row(destination.PostHog)
		r.Kind, r.URL, r.Enabled = "posthog", e.cfg.PostHogHost, e.deps.Destinations.PostHog
		out.Destinations = append(out.Destinations, r)
	}
	if *asJSON {
		return writeJSON(env.stdout, out)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tKIND\tENABLED\tPENDING\tDELIVERED\tDEAD\tLAST ERROR")
	for _, r := range out.Destinations {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.Destination, r.Kind, yesNo(r.Enabled), r.Pending, r.Delivered, r.Dead, deref(r.LastError))
	}
	return tw.Flush()
}

// testDestination sends one signed webhook.test event to the webhook and
// prints the status it answered.
func testDestination(ctx context.Context, env *environment, id string) error {
	cfg, err := loadConfig(env.getenv, env.flags)
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	defs, err := loadDefinitions(cfg)
	if err != nil {
		return err
	}
	if err := defs.report.Err(); err != nil {
		return fmt.Errorf("invalid definitions (see bucket-worker validate): %w", err)
	}
	for _, w := range defs.destinations {
		if w.ID != id {
			continue
		}
		env.keepSecret(w.SecretEnv)
		sender, err := tasks.NewWebhookSender(w, env.getenv(w.SecretEnv))
		if err != nil {
			return err
		}
		status, err := sender.Test(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "%s answered %d\n", id, status)
		return nil
	}
	return usageError{fmt.Sprintf("no webhook destination %q in %s", id, cfg.DefinitionsDir)}
}
