package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/rs/zerolog"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/tasks"
)

// runWorker is the long-running worker: it migrates (unless MIGRATE=off),
// loads the definitions, registers the tasks with Hatchet and serves until
// SIGINT or SIGTERM, then shuts down gracefully.
func runWorker(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("run")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(env.getenv, env.flags)
	if err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	logger := newLogger(env.stderr, cfg.LogFormat, cfg.LogLevel)

	defs, err := loadDefinitions(cfg)
	if err != nil {
		return err
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
		return fmt.Errorf("%d invalid definition(s) in %s", len(defs.report.Errors), cfg.DefinitionsDir)
	}

	conn, err := db.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	if cfg.Migrate == "auto" {
		applied, err := db.Migrate(ctx, conn)
		if err != nil {
			return err
		}
		logger.InfoContext(ctx, "database migrated", slog.Int("applied", len(applied)))
	}

	client, err := hatchet.NewClient()
	if err != nil {
		return fmt.Errorf("connecting to Hatchet (is HATCHET_CLIENT_TOKEN set?): %w", err)
	}
	deps := tasks.Deps{
		DB: conn, Buckets: defs.bucketRegistry, Journeys: defs.journeyRegistry,
		Logger: logger, Now: time.Now,
	}
	worker, err := tasks.NewWorker(client, cfg.WorkerName, deps, sdkLogger(env, cfg))
	if err != nil {
		return err
	}
	cleanup, err := worker.Start()
	if err != nil {
		return fmt.Errorf("starting the Hatchet worker: %w", err)
	}
	logger.InfoContext(ctx, "worker started",
		slog.String("worker", cfg.WorkerName),
		slog.Int("buckets", defs.bucketRegistry.Len()),
		slog.Int("journeys", len(defs.journeyRegistry.All())))

	<-ctx.Done()
	logger.InfoContext(context.WithoutCancel(ctx), "shutting down")
	if err := cleanup(); err != nil {
		return fmt.Errorf("stopping the Hatchet worker: %w", err)
	}
	logger.InfoContext(context.WithoutCancel(ctx), "worker stopped")
	return nil
}

// sdkLogger is the logger the Hatchet SDK writes its own logs to: stderr at
// HATCHET_CLIENT_LOG_LEVEL, or warn (debug when LOG_LEVEL is debug).
func sdkLogger(env *environment, cfg config) *zerolog.Logger {
	level := zerolog.WarnLevel
	if cfg.LogLevel <= slog.LevelDebug {
		level = zerolog.DebugLevel
	}
	if parsed, err := zerolog.ParseLevel(env.getenv("HATCHET_CLIENT_LOG_LEVEL")); err == nil && env.getenv("HATCHET_CLIENT_LOG_LEVEL") != "" {
		level = parsed
	}
	l := zerolog.New(env.stderr).Level(level).With().Timestamp().Str("component", "hatchet-sdk").Logger()
	return &l
}
