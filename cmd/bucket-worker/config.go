package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/bucketworker/bucket-worker/buckets/definition"
	"github.com/bucketworker/bucket-worker/tasks"
)

// config is the worker's configuration (contract §12), read once from the
// environment and the global flags. HATCHET_CLIENT_* is left to the SDK.
type config struct {
	DatabaseURL      string
	DatabaseMaxConns int
	DefinitionsDir   string
	EnabledBuckets   definition.Selection
	EnabledJourneys  definition.Selection
	ReconcileCron    string
	ReconcileTimeout time.Duration
	BackfillTimeout  time.Duration
	ConfigTTL        time.Duration
	IngestMode       tasks.IngestMode
	IngestEvents     []string
	IngestBatchEvent string
	Migrate          string
	WorkerName       string
	LogLevel         slog.Level
	LogFormat        string
	// PprofAddr is where run serves Go's profiles (PPROF_ADDR); "" serves
	// none.
	PprofAddr string
	// MetricsAddr is where run serves /metrics, /healthz and /readyz
	// (METRICS_ADDR, contract §16); "" when it is off.
	MetricsAddr string
	// PostHogAPIKey and PostHogHost are where the buckets with
	// syncToPostHog mirror their membership (contract §15.1); without a
	// key nothing is sent. DestinationMaxAttempts is how often a delivery
	// fails before it is dead (§15).
	PostHogAPIKey          string
	PostHogHost            string
	DestinationMaxAttempts int
}

// DefaultMetricsAddr is where run serves its metrics unless METRICS_ADDR
// says otherwise (contract §16): loopback only, so that exposing them is
// a decision.
const DefaultMetricsAddr = "127.0.0.1:9464"

// defaultDatabaseURL is used when neither --database-url nor DATABASE_URL is set.
const defaultDatabaseURL = "postgres://localhost:5432/bucket_worker?sslmode=disable"

// loadConfig reads the environment, lets the global flags override it, and
// validates every value. Every bad value is reported, each naming its
// variable.
func loadConfig(getenv func(string) string, flags globalFlags) (config, error) {
	env := func(key, def string) string {
		if v := strings.TrimSpace(getenv(key)); v != "" {
			return v
		}
		return def
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	duration := func(key, def string) time.Duration {
		raw := env(key, def)
		d, err := time.ParseDuration(raw)
		if err != nil || d <= 0 {
			bad(key, "%q is not a positive duration such as 120s or 5m", raw)
		}
		return d
	}
	oneOf := func(key, def string, allowed ...string) string {
		v := env(key, def)
		for _, a := range allowed {
			if v == a {
				return v
			}
		}
		bad(key, "%q is not one of %s", v, strings.Join(allowed, ", "))
		return def
	}

	positive := func(key, def string) int {
		raw := env(key, def)
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 {
			bad(key, "%q is not a positive whole number", raw)
		}
		return n
	}

	c := config{
		DatabaseURL:            firstNonEmpty(flags.databaseURL, env("DATABASE_URL", defaultDatabaseURL)),
		DatabaseMaxConns:       positive("DATABASE_MAX_CONNS", "20"),
		DefinitionsDir:         firstNonEmpty(flags.definitions, env("DEFINITIONS_DIR", "./definitions")),
		EnabledBuckets:         definition.ParseSelection(env("ENABLED_BUCKETS", "*")),
		EnabledJourneys:        definition.ParseSelection(env("ENABLED_JOURNEYS", "*")),
		ReconcileCron:          env("BUCKET_RECONCILE_CRON", "*/5 * * * *"),
		ReconcileTimeout:       duration("BUCKET_RECONCILE_TIMEOUT", "120s"),
		BackfillTimeout:        duration("BUCKET_BACKFILL_TIMEOUT", "600s"),
		ConfigTTL:              duration("BUCKET_CONFIG_TTL", "5s"),
		IngestMode:             tasks.IngestMode(oneOf("INGEST_MODE", string(tasks.IngestStore), string(tasks.IngestStore), string(tasks.IngestEvaluate), string(tasks.IngestOff))),
		IngestBatchEvent:       env("INGEST_BATCH_EVENT", tasks.DefaultBatchEvent),
		Migrate:                oneOf("MIGRATE", "auto", "auto", "off"),
		WorkerName:             env("WORKER_NAME", "bucket-worker"),
		LogFormat:              oneOf("LOG_FORMAT", "text", "text", "json"),
		PprofAddr:              env("PPROF_ADDR", ""),
		MetricsAddr:            env("METRICS_ADDR", DefaultMetricsAddr),
		PostHogAPIKey:          env("POSTHOG_API_KEY", ""),
		PostHogHost:            env("POSTHOG_HOST", "https://us.i.posthog.com"),
		DestinationMaxAttempts: positive("DESTINATION_MAX_ATTEMPTS", "15"),
	}
	if u, err := url.Parse(c.PostHogHost); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		bad("POSTHOG_HOST", "%q is not an http(s) URL", c.PostHogHost)
	}
	if _, err := cron.ParseStandard(c.ReconcileCron); err != nil {
		bad("BUCKET_RECONCILE_CRON", "%q is not a cron expression: %v", c.ReconcileCron, err)
	}
	for _, key := range strings.Split(env("INGEST_EVENTS", "auto"), ",") {
		key = strings.TrimSpace(key)
		switch {
		case key == "":
			bad("INGEST_EVENTS", "empty event key in the list")
		case strings.HasPrefix(key, "bucket:"):
			bad("INGEST_EVENTS", "%q is a reserved bucket:* event", key)
		default:
			c.IngestEvents = append(c.IngestEvents, key)
		}
	}
	switch key := c.IngestBatchEvent; {
	case strings.HasPrefix(key, "bucket:"):
		bad("INGEST_BATCH_EVENT", "%q is a reserved bucket:* event", key)
	case slices.Contains(c.IngestEvents, key):
		bad("INGEST_BATCH_EVENT", "%q is also in INGEST_EVENTS: a batch key cannot be an event of its own", key)
	}
	levelKey, level := "LOG_LEVEL", env("LOG_LEVEL", "info")
	if flags.logLevel != "" {
		levelKey, level = "--log-level", flags.logLevel
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		bad(levelKey, "%q is not one of debug, info, warn, error", level)
	}
	if c.WorkerName == "" {
		bad("WORKER_NAME", "must not be empty")
	}
	if c.PprofAddr != "" {
		if _, _, err := net.SplitHostPort(c.PprofAddr); err != nil {
			bad("PPROF_ADDR", "%q is not host:port: %v", c.PprofAddr, err)
		}
	}
	if c.MetricsAddr == "off" {
		c.MetricsAddr = ""
	} else if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
		bad("METRICS_ADDR", "%q is not host:port or off: %v", c.MetricsAddr, err)
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		return c, errors.New(strings.Join(msgs, "; "))
	}
	return c, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
