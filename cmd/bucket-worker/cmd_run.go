package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
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
	e, closeEngine, err := openEngine(ctx, env, workerMode)
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

	opts := tasks.WorkerOptions{
		Name:             cfg.WorkerName,
		ReconcileCron:    cfg.ReconcileCron,
		ReconcileTimeout: cfg.ReconcileTimeout,
		BackfillTimeout:  cfg.BackfillTimeout,
		IngestMode:       cfg.IngestMode,
		IngestEvents:     tasks.IngestEventKeys(cfg.IngestEvents, e.deps.Buckets),
		BatchEvent:       cfg.IngestBatchEvent,
		SDKLogger:        sdkLogger(env, cfg),
	}

	if e.probes != nil {
		addr, stopProbes, err := e.probes.serve(cfg.MetricsAddr, e.deps)
		if err != nil {
			return err
		}
		defer stopProbes()
		logger.InfoContext(ctx, "serving metrics and probes", slog.String("addr", "http://"+addr+"/metrics"))
		if err := e.deps.Metrics.Sizes(ctx, e.deps); err != nil {
			logger.WarnContext(ctx, "metrics: counting the members of the buckets", slog.Any("error", err))
		}
	}
	if cfg.PprofAddr != "" {
		stopProfiles, err := serveProfiles(cfg.PprofAddr)
		if err != nil {
			return err
		}
		defer stopProfiles()
		logger.InfoContext(ctx, "serving Go profiles", slog.String("addr", "http://"+cfg.PprofAddr+"/debug/pprof/"))
	}

	// The single ingests of concurrent runs share rounds, where a command
	// ingests each alone.
	e.deps.Gatherer = tasks.NewGatherer()

	// The outbox dispatcher and the expiry timers run until shutdown, when
	// the Hatchet worker has stopped taking runs; they carry on while
	// Hatchet is away.
	loopsCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	var loops sync.WaitGroup
	loops.Go(func() { e.deps.Dispatcher.Run(loopsCtx, dispatchInterval) })
	for _, p := range e.deps.Deliverers {
		loops.Go(func() { p.Run(loopsCtx, dispatchInterval) })
	}
	loops.Go(func() { tasks.RunTimers(loopsCtx, e.deps, tasks.ExpiryInterval) })
	defer func() {
		stopLoops()
		loops.Wait()
	}()

	for first, waited := true, false; ; waited = true {
		if err := e.hatchet.await(ctx, logger, hatchetProbeInterval); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%w; %s", err, restartWithToken)
		}
		if waited {
			logger.InfoContext(ctx, "Hatchet is back: serving again")
			if n, err := db.RetryOutboxNow(ctx, e.deps.DB, e.deps.Now()); err != nil {
				logger.WarnContext(ctx, "retrying the outbox", slog.Any("error", err))
			} else if n > 0 {
				e.deps.Dispatcher.Wake()
			}
		}
		stop, err := serve(ctx, e, opts)
		if err != nil {
			// Hatchet may have been started afresh, or gone away, between
			// the probe and the worker's registration.
			probed := e.hatchet.probe(ctx)
			switch {
			case rejectsToken(err) || errors.Is(probed, errTokenRejected):
				return fmt.Errorf("%w (registering the worker: %v); %s", errTokenRejected, err, restartWithToken)
			case probed != nil && ctx.Err() == nil:
				logger.WarnContext(ctx, "Hatchet went away while the worker registered: it waits for it again", slog.Any("error", err))
				continue
			}
			return err
		}
		e.setServing(true)
		if first {
			logger.InfoContext(ctx, "worker started",
				slog.String("worker", cfg.WorkerName),
				slog.Int("buckets", e.defs.bucketRegistry.Len()),
				slog.Int("journeys", len(e.defs.journeyRegistry.All())),
				slog.String("reconcile_cron", cfg.ReconcileCron),
				slog.String("ingest_mode", string(cfg.IngestMode)))
			first = false
		}
		// Hatchet going away would make the SDK's worker end the process
		// when it reconnects to a server that no longer knows it: stop it
		// first, wait for Hatchet, and serve again.
		lost := e.hatchet.watch(ctx, hatchetProbeInterval)
		e.setServing(false)
		stopErr := stop()
		shutdown := context.WithoutCancel(ctx)
		if ctx.Err() != nil {
			logger.InfoContext(shutdown, "worker stopped")
			if stopErr != nil {
				return fmt.Errorf("stopping the Hatchet worker: %w", stopErr)
			}
			return nil
		}
		logger.WarnContext(ctx, "Hatchet is away: the worker takes no runs until it is back; "+
			"pushes wait in the outbox and expiry timers keep firing", slog.Any("error", lost))
	}
}

// serveProfiles serves Go's profiles (net/http/pprof) at addr, with the
// block and mutex profiles switched on, until stop.
func serveProfiles(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("PPROF_ADDR: listening on %s: %w", addr, err)
	}
	runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	runtime.SetMutexProfileFraction(10)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

// hatchetProbeInterval is how often a running worker checks that Hatchet
// answers.
const hatchetProbeInterval = time.Second

// serve registers the tasks with Hatchet and starts taking runs, then
// enqueues the backfills that new or edited buckets need; stop stops
// taking runs.
func serve(ctx context.Context, e *engine, opts tasks.WorkerOptions) (stop func() error, err error) {
	worker, err := tasks.NewWorker(e.client, e.deps, opts)
	if err != nil {
		return nil, err
	}
	stop, err = worker.Start()
	if err != nil {
		return nil, fmt.Errorf("starting the Hatchet worker: %w", err)
	}
	// Enqueued once the worker has registered bucket-backfill (on a new
	// Hatchet it does not exist before); until a backfill completes, the
	// first-deploy guard keeps the bucket's join pass closed. A failure
	// here is retried by the next sweep.
	if _, err := tasks.EnqueueBackfills(ctx, e.deps); err != nil {
		e.logger.ErrorContext(ctx, "enqueueing backfills", slog.Any("error", err))
	}
	return stop, nil
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
