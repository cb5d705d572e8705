package tasks

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/buckets/destination"
	"github.com/bucketworker/bucket-worker/db"
)

// Metrics is what the engine tells an operator's monitoring (contract
// §16). Every label value comes from the registry, the configured
// destinations or a fixed set, never from input, so the series are
// bounded. A nil *Metrics records nothing: commands and most tests run
// without.
type Metrics struct {
	transitions   *prometheus.CounterVec
	members       *prometheus.GaugeVec
	ingested      *prometheus.CounterVec
	sweepSeconds  *prometheus.HistogramVec
	timerLateness prometheus.Histogram
	roundEvents   prometheus.Histogram
	known         map[string]bool // the registry's bucket ids
}

// The results an ingested event is counted under.
const (
	ResultStored    = "stored"
	ResultDuplicate = "duplicate"
	ResultIgnored   = "ignored"
	ResultInvalid   = "invalid"
	// ResultEvaluated is an event of evaluate mode, which stores nothing.
	ResultEvaluated = "evaluated"
)

// NewMetrics registers the engine's metrics with reg, with a series for
// every bucket of the registry from the start (a counter that appears only
// at its first increment hides that increment from rate()).
func NewMetrics(reg prometheus.Registerer, registry *buckets.Registry) *Metrics {
	const ns = "bucket_worker"
	m := &Metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "transitions_total",
			Help: "Transitions emitted (bucket:entered, bucket:left, bucket:dwell), by bucket, transition and source (event, reconcile, backfill). Joins the entry limit kept silent are not counted."},
			[]string{"bucket", "transition", "source"}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "bucket_members",
			Help: "Active members of the bucket: counted by each sweep of it, then moved by the transitions this process commits."},
			[]string{"bucket"}),
		ingested: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_ingested_total",
			Help: "Events taken by bucket-ingest, by result: stored, duplicate (its key was stored already), ignored (a bucket:* event, an erased user), invalid (rejected, nothing written), evaluated (evaluate mode)."},
			[]string{"result"}),
		sweepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "sweep_duration_seconds",
			Help:    "How long a sweep of one bucket took, its passes and their transitions included.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}},
			[]string{"bucket"}),
		timerLateness: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "expiry_timer_lateness_seconds",
			Help:    "How long after its deadline an expiry timer fired.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600}}),
		roundEvents: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "ingest_round_events",
			Help:    "Single ingests of concurrent bucket-ingest runs that went in one transaction: 1 while the worker keeps up, more as it is busy.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, GatherMax}}),
		known: map[string]bool{},
	}
	reg.MustRegister(m.transitions, m.members, m.ingested, m.sweepSeconds, m.timerLateness, m.roundEvents)
	for _, r := range []string{ResultStored, ResultDuplicate, ResultIgnored, ResultInvalid, ResultEvaluated} {
		m.ingested.WithLabelValues(r)
	}
	for _, b := range registry.All() {
		m.known[b.ID] = true
		m.sweepSeconds.WithLabelValues(b.ID)
		for _, k := range []TransitionKind{Entered, Left} { // dwell's appear at a bucket's first fire

			for _, s := range []Source{SourceEvent, SourceReconcile, SourceBackfill} {
				m.transitions.WithLabelValues(b.ID, string(k), string(s))
			}
		}
	}
	return m
}

// committed counts the transitions of a committed transaction.
func (m *Metrics) committed(ts []Transition) {
	if m == nil {
		return
	}
	for _, t := range ts {
		if !m.known[t.BucketID] {
			continue
		}
		switch t.Transition {
		case Entered:
			m.members.WithLabelValues(t.BucketID).Inc()
		case Left:
			m.members.WithLabelValues(t.BucketID).Dec()
		}
		if !t.Suppressed {
			m.transitions.WithLabelValues(t.BucketID, string(t.Transition), string(t.Source)).Inc()
		}
	}
}

// resultOf is the result an ingested event is counted under.
func resultOf(mode IngestMode, res IngestOutput) string {
	switch {
	case res.Stored:
		return ResultStored
	case res.Status == StatusIgnored:
		return ResultIgnored
	case mode == IngestStore:
		return ResultDuplicate
	}
	return ResultEvaluated
}

// ingestedAs counts n events under result.
func (m *Metrics) ingestedAs(result string, n int) {
	if m != nil && n > 0 {
		m.ingested.WithLabelValues(result).Add(float64(n))
	}
}

// gathered records a round of n single ingests (Gatherer).
func (m *Metrics) gathered(n int) {
	if m != nil {
		m.roundEvents.Observe(float64(n))
	}
}

// swept records a sweep of the bucket: how long it took, and its size
// once it was done.
func (m *Metrics) swept(bucketID string, took time.Duration, members int) {
	if m == nil || !m.known[bucketID] {
		return
	}
	m.sweepSeconds.WithLabelValues(bucketID).Observe(took.Seconds())
	m.members.WithLabelValues(bucketID).Set(float64(members))
}

// timersFired records how late each timer fired at now.
func (m *Metrics) timersFired(timers []db.ExpiryTimer, now time.Time) {
	if m == nil {
		return
	}
	for _, t := range timers {
		m.timerLateness.Observe(max(0, now.Sub(t.FiresAt).Seconds()))
	}
}

// Sizes counts the active members of every bucket of the registry and sets
// the size gauge: what a worker does at boot, before its first sweep.
func (m *Metrics) Sizes(ctx context.Context, d *Deps) error {
	if m == nil {
		return nil
	}
	ids := make([]string, 0, len(m.known))
	for _, b := range d.Buckets.All() {
		ids = append(ids, b.ID)
	}
	sizes, err := db.CountMembers(ctx, d.DB, ids)
	if err != nil {
		return err
	}
	for _, id := range ids {
		m.members.WithLabelValues(id).Set(float64(sizes[id]))
	}
	return nil
}

// Backlog is a prometheus.Collector of what waits in the database, read
// at each scrape with indexed counts of the pending rows only: the pushes
// and deliveries pending per destination and the age of the oldest, the
// dead deliveries, and the expiry timers armed and overdue.
type Backlog struct {
	d            *Deps
	destinations []string
	timeout      time.Duration

	pending, oldest, dead, timersArmed, timersDue *prometheus.Desc
}

// DestinationHatchet is the destination label of the pushes to Hatchet.
const DestinationHatchet = "hatchet"

// NewBacklog returns the collector of the deps' backlog; each scrape reads
// it within timeout.
func NewBacklog(d *Deps, timeout time.Duration) *Backlog {
	dests := []string{DestinationHatchet}
	if d.Destinations.PostHog {
		dests = append(dests, destination.PostHog)
	}
	for _, w := range d.Destinations.Webhooks {
		dests = append(dests, w.ID)
	}
	const ns = "bucket_worker_"
	return &Backlog{d: d, destinations: dests, timeout: timeout,
		pending:     prometheus.NewDesc(ns+"outbox_pending", "Pushes to Hatchet (destination=\"hatchet\") and deliveries to the other destinations that wait to be sent.", []string{"destination"}, nil),
		oldest:      prometheus.NewDesc(ns+"outbox_oldest_age_seconds", "How long the oldest pending push or delivery of the destination has waited; 0 when none waits.", []string{"destination"}, nil),
		dead:        prometheus.NewDesc(ns+"deliveries_dead", "Deliveries that failed DESTINATION_MAX_ATTEMPTS times: kept until `bucket-worker outbox --retry-dead`.", []string{"destination"}, nil),
		timersArmed: prometheus.NewDesc(ns+"expiry_timers_armed", "Expiry timers armed and waiting for their deadline.", nil, nil),
		timersDue:   prometheus.NewDesc(ns+"expiry_timers_due", "Expiry timers whose deadline has passed and that have not fired yet.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Backlog) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.oldest, c.dead, c.timersArmed, c.timersDue} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A failed read leaves its
// metrics out of the scrape and is logged; /readyz says why.
func (c *Backlog) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	now := c.d.Now()
	outbox, err := db.SummarizeOutbox(ctx, c.d.DB, 0)
	if err != nil {
		c.d.Logger.WarnContext(ctx, "metrics: reading the backlog", slog.Any("error", err))
		return
	}
	backlog, err := db.DeliveryBacklog(ctx, c.d.DB)
	if err != nil {
		c.d.Logger.WarnContext(ctx, "metrics: reading the backlog", slog.Any("error", err))
		return
	}
	backlog[DestinationHatchet] = db.Backlog{Pending: outbox.Pending, Oldest: outbox.OldestPending}
	for _, id := range c.destinations {
		b := backlog[id]
		age := 0.0
		if b.Oldest != nil {
			age = max(0, now.Sub(*b.Oldest).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(b.Pending), id)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, id)
		if id != DestinationHatchet {
			ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(b.Dead), id)
		}
	}
	timers, err := db.SummarizeTimers(ctx, c.d.DB, now)
	if err != nil {
		c.d.Logger.WarnContext(ctx, "metrics: reading the expiry timers", slog.Any("error", err))
		return
	}
	ch <- prometheus.MustNewConstMetric(c.timersArmed, prometheus.GaugeValue, float64(timers.Armed))
	ch <- prometheus.MustNewConstMetric(c.timersDue, prometheus.GaugeValue, float64(timers.Due))
}
