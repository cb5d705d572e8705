package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/tasks"
)

// dispatchInterval is how often the running worker dispatches the outbox.
const dispatchInterval = time.Second

// runWorker is the long-running worker: it migrates (unless MIGRATE=off),
// loads the definitions, registers the tasks with Hatchet, runs the outbox
// dispatcher and serves until SIGINT or SIGTERM, then shuts down
// gracefully.
func runWorker(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("run")
	if err := parse(fs, args); err != nil {
		return err
	}
	e, closeEngine, err := openEngine(ctx, env, true)
	if err != nil {
		return err
	}
	defer closeEngine()
	cfg, logger := e.cfg, e.logger
	if cfg.Migrate == "auto" {
		applied, err := db.Migrate(ctx, e.deps.DB)
		if err != nil {
			return err
		}
		logger.InfoContext(ctx, "database migrated", slog.Int("applied", len(applied)))
	}

	e.deps.EnqueueBackfill = tasks.EnqueueThrough(e.client)
	worker, err := tasks.NewWorker(e.client, e.deps, tasks.WorkerOptions{
		Name:             cfg.WorkerName,
		ReconcileCron:    cfg.ReconcileCron,
		ReconcileTimeout: cfg.ReconcileTimeout,
		BackfillTimeout:  cfg.BackfillTimeout,
		IngestMode:       cfg.IngestMode,
		IngestEvents:     tasks.IngestEventKeys(cfg.IngestEvents, e.deps.Buckets),
		SDKLogger:        sdkLogger(env, cfg),
	})
	if err != nil {
		return err
	}
	cleanup, err := worker.Start()
	if err != nil {
		return fmt.Errorf("starting the Hatchet worker: %w", err)
	}
	// New or edited buckets get their backfill. Enqueued once the worker
	// has registered bucket-backfill (on a new Hatchet it does not exist
	// before); until a backfill completes, the first-deploy guard keeps
	// the bucket's join pass closed. A failure here is retried by the
	// next sweep.
	if _, err := tasks.EnqueueBackfills(ctx, e.deps, cfg.BackfillTimeout); err != nil {
		logger.ErrorContext(ctx, "enqueueing backfills at boot", slog.Any("error", err))
	}
	// The outbox dispatcher and the expiry timers run until shutdown, after
	// the Hatchet worker stopped taking runs.
	loopsCtx, stopLoops := context.WithCancel(ctx)
	var loops sync.WaitGroup
	loops.Go(func() { e.deps.Dispatcher.Run(loopsCtx, dispatchInterval) })
	loops.Go(func() { tasks.RunTimers(loopsCtx, e.deps, tasks.ExpiryInterval) })
	logger.InfoContext(ctx, "worker started",
		slog.String("worker", cfg.WorkerName),
		slog.Int("buckets", e.defs.bucketRegistry.Len()),
		slog.Int("journeys", len(e.defs.journeyRegistry.All())),
		slog.String("reconcile_cron", cfg.ReconcileCron),
		slog.String("ingest_mode", cfg.IngestMode))

	<-ctx.Done()
	shutdown := context.WithoutCancel(ctx)
	logger.InfoContext(shutdown, "shutting down")
	stopErr := cleanup()
	stopLoops()
	loops.Wait()
	if stopErr != nil {
		return fmt.Errorf("stopping the Hatchet worker: %w", stopErr)
	}
	logger.InfoContext(shutdown, "worker stopped")
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
