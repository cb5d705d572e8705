package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bucketworker/bucket-worker/tasks"
)

// scrapeTimeout bounds the database reads of one scrape, and readyTimeout
// the ping of /readyz.
const (
	scrapeTimeout = 5 * time.Second
	readyTimeout  = 2 * time.Second
)

// probes are what run serves at METRICS_ADDR (contract §16): the
// Prometheus registry of its metrics, and whether it is ready.
type probes struct {
	registry *prometheus.Registry
	// serving is true while the Hatchet worker is connected and takes runs.
	serving atomic.Bool
}

// newProbes registers the engine's metrics (deps.Metrics, set here), the
// backlog read at each scrape and Go's runtime metrics in a registry of
// their own.
func newProbes(deps *tasks.Deps) *probes {
	p := &probes{registry: prometheus.NewRegistry()}
	deps.Metrics = tasks.NewMetrics(p.registry, deps.Buckets)
	p.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		tasks.NewBacklog(deps, scrapeTimeout),
	)
	return p
}

// serve listens on addr and serves /metrics, /healthz and /readyz until
// stop; it returns the address it listens on (addr may ask for any port).
// An address it cannot bind is an error naming METRICS_ADDR.
func (p *probes) serve(addr string, deps *tasks.Deps) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("METRICS_ADDR: listening on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(deps.Logger.Handler(), slog.LevelWarn),
		Timeout:  2 * scrapeTimeout,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := p.ready(r.Context(), deps); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// errNotServing is /readyz's answer while the Hatchet worker is not
// connected: at boot, and while Hatchet is away.
var errNotServing = errors.New("hatchet: the worker is not connected (starting, or Hatchet is away)")

// ready is nil when Postgres answers and the Hatchet worker takes runs.
func (p *probes) ready(ctx context.Context, deps *tasks.Deps) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := deps.DB.PingContext(ctx); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if !p.serving.Load() {
		return errNotServing
	}
	return nil
}

// setServing tells /readyz whether the Hatchet worker takes runs.
func (e *engine) setServing(on bool) {
	if e.probes != nil {
		e.probes.serving.Store(on)
	}
}
