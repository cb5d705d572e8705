package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/tasks"
)

// engine is what the commands that run the engine in-process share: the
// configuration, the definitions, the database and the task dependencies.
type engine struct {
	cfg    config
	defs   *definitions
	logger *slog.Logger
	deps   *tasks.Deps
	// client is the Hatchet client, nil when HATCHET_CLIENT_TOKEN is unset,
	// and hatchet the server it talks to.
	client  *hatchet.Client
	hatchet hatchetServer
	// probes are the metrics and health probes of a running worker; nil
	// for a command, or with METRICS_ADDR=off.
	probes *probes
}

// engineMode says what a command needs of Hatchet.
type engineMode int

const (
	// offline: Hatchet when HATCHET_CLIENT_TOKEN is set, to dispatch the
	// command's pushes; otherwise they stay pending.
	offline engineMode = iota
	// needsHatchet: the command fails without Hatchet.
	needsHatchet
	// workerMode: the running worker, which also enqueues task runs.
	workerMode
)

// openEngine loads the configuration and the definitions (any invalid
// definition stops it), connects to the database and, when
// HATCHET_CLIENT_TOKEN is set or the mode needs it, to Hatchet, and builds
// the task dependencies once. close releases the connections.
func openEngine(ctx context.Context, env *environment, mode engineMode) (e *engine, close func(), err error) {
	cfg, err := loadConfig(env.getenv, env.flags)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid configuration: %w", err)
	}
	logger := newLogger(env.stderr, cfg.LogFormat, cfg.LogLevel)
	defs, err := loadDefinitions(cfg)
	if err != nil {
		return nil, nil, err
	}
	for _, w := range defs.report.Warnings {
		logger.WarnContext(ctx, "definition warning", slog.String("file", w.File), slog.String("path", w.Path), slog.String("message", w.Message))
	}
	for _, notice := range defs.notices {
		logger.WarnContext(ctx, notice)
	}
	if err := defs.report.Err(); err != nil {
		for _, e := range defs.report.Errors {
			logger.ErrorContext(ctx, "invalid definition", slog.String("file", e.File), slog.String("path", e.Path), slog.String("message", e.Message))
		}
		return nil, nil, fmt.Errorf("%d invalid definition(s) in %s (see bucket-worker validate)", len(defs.report.Errors), cfg.DefinitionsDir)
	}

	conn, err := connect(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	schema, err := db.ReadSchema(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if schema.MembershipContactID || schema.EventContactID {
		logger.InfoContext(ctx, "the database keys rows by contact too: the worker writes contact_id",
			slog.Bool("bucket_memberships", schema.MembershipContactID), slog.Bool("user_events", schema.EventContactID))
	}
	e = &engine{cfg: cfg, defs: defs, logger: logger}
	deps := tasks.Deps{
		DB:              conn,
		Schema:          schema,
		Buckets:         defs.bucketRegistry,
		Journeys:        defs.journeyRegistry,
		Logger:          logger,
		Now:             time.Now,
		Switch:          tasks.NewRuntimeSwitch(conn, cfg.ConfigTTL),
		SweepBudget:     cfg.ReconcileTimeout * 3 / 4,
		BackfillTimeout: cfg.BackfillTimeout,
	}
	if env.getenv("HATCHET_CLIENT_TOKEN") != "" || mode != offline {
		client, server, err := connectHatchet(env.getenv)
		if err != nil {
			conn.Close()
			return nil, nil, err
		}
		e.client, e.hatchet = client, server
		deps.Hatchet = tasks.NewHatchet(client)
		deps.Dispatcher = tasks.NewDispatcher(conn, deps.Hatchet, logger, deps.Now)
		if mode == workerMode {
			deps.EnqueueBackfill = tasks.EnqueueThrough(client)
		}
	}
	destinations, deliverers, closeDestinations, err := openDestinations(ctx, env, cfg, defs, conn, logger, deps.Now)
	if err != nil {
		closeDestinations()
		conn.Close()
		return nil, nil, err
	}
	deps.Destinations, deps.Deliverers = destinations, deliverers
	if mode == workerMode && cfg.MetricsAddr != "" {
		e.probes = newProbes(&deps)
	}
	e.deps = &deps
	return e, func() { closeDestinations(); conn.Close() }, nil
}
