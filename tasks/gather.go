package tasks

import (
	"context"
	"sync"
)

// GatherMax is the most single ingests one gathered round holds.
const GatherMax = 100

// GatherRounds is the most gathered rounds a worker has in flight at once:
// a round waiting for a lock (a sweep's chunk holds its rows until it
// commits) holds up its own events only.
const GatherRounds = 4

// Gatherer ingests the single events of concurrent bucket-ingest runs
// together. An event that arrives while fewer than GatherRounds rounds are
// in flight goes at once: an idle worker adds no wait. Those that arrive
// while they all are wait for one to end, and then go together in the
// next round, one transaction of the ingest's few statements for all of
// them (ingestEvents), where each run paid for its own: the round trips to
// PostgreSQL, more of an ingest's CPU than its statements take to run, are
// shared (docs/performance.md, *Round trips of an ingest*).
//
// A round holds at most GatherMax events, of distinct users and distinct
// keys, so it is one transaction, and each of its events is ingested with
// the semantics of its single ingest (contract §7): a round rolled back
// rolls back each of them whole. A user's events go in the order they
// came, one round after the other: an event waits while its user is in a
// round in flight. A round that fails is ingested again one event at a
// time, so that an event the database rejects fails its own run only.
//
// A running worker gathers (Deps.Gatherer); a command ingests each event
// alone.
type Gatherer struct {
	rounds int // the most rounds in flight

	mu       sync.Mutex
	queue    []*gathered
	inFlight int
	busy     map[string]bool // the users of the rounds in flight
}

// gathered is one single ingest waiting for its round, then its result.
type gathered struct {
	ctx  context.Context
	mode IngestMode
	ev   IngestEvent
	done chan struct{}
	out  IngestOutput
	err  error
}

// NewGatherer returns a gatherer with nothing in flight.
func NewGatherer() *Gatherer { return newGatherer(GatherRounds) }

// newGatherer returns a gatherer of at most rounds rounds in flight.
func newGatherer(rounds int) *Gatherer {
	return &Gatherer{rounds: rounds, busy: map[string]bool{}}
}

// ingest ingests ev in the next round and returns its result. When ctx
// ends first it returns at once; the round may still ingest the event, and
// a retry of the run then finds its key stored.
func (g *Gatherer) ingest(ctx context.Context, d *Deps, mode IngestMode, ev IngestEvent) (IngestOutput, error) {
	item := &gathered{ctx: ctx, mode: mode, ev: ev, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, item)
	if g.inFlight < g.rounds {
		if round := g.next(); len(round) > 0 {
			g.inFlight++
			go g.drain(d, round)
		}
	}
	g.mu.Unlock()
	select {
	case <-item.done:
		return item.out, item.err
	case <-ctx.Done():
		return IngestOutput{Transitions: []Transition{}, Exited: []string{}}, ctx.Err()
	}
}

// drain ingests the round, then the next ones it takes off the queue,
// until none is left for it.
func (g *Gatherer) drain(d *Deps, round []*gathered) {
	for len(round) > 0 {
		g.ingestRound(d, round)
		g.mu.Lock()
		for _, item := range round {
			delete(g.busy, item.ev.UserID)
		}
		round = g.next()
		if len(round) == 0 {
			g.inFlight--
		}
		g.mu.Unlock()
	}
}

// next takes the next round off the queue: in order of arrival, the
// events of the first one's mode, at most GatherMax, each of a user and a
// key no earlier one in the round has, of a user in no round in flight.
// The others keep their place. Its users are then busy.
func (g *Gatherer) next() []*gathered {
	var round, rest []*gathered
	var mode IngestMode
	keys := map[string]bool{}
	for _, item := range g.queue {
		key := item.ev.IdempotencyKey
		switch {
		case len(round) == GatherMax, len(round) > 0 && item.mode != mode, g.busy[item.ev.UserID], key != nil && keys[*key]:
			rest = append(rest, item)
			continue
		}
		round, mode = append(round, item), item.mode
		g.busy[item.ev.UserID] = true
		if key != nil {
			keys[*key] = true
		}
	}
	g.queue = rest
	return round
}

// ingestRound ingests a round in one transaction, or, when that fails and
// it holds more than one event, each of its events alone, and hands each
// event its result. The round is not one run's, so no run's end cancels
// it: its context is the first event's, without its cancellation.
func (g *Gatherer) ingestRound(d *Deps, round []*gathered) {
	ctx := context.WithoutCancel(round[0].ctx)
	events := make([]IngestEvent, len(round))
	for i, item := range round {
		events[i] = item.ev
	}
	results, _, err := ingestEvents(ctx, d, round[0].mode, events)
	if err != nil && len(round) > 1 {
		for _, item := range round {
			g.ingestRound(d, []*gathered{item})
		}
		return
	}
	d.Metrics.gathered(len(round))
	for i, item := range round {
		item.out, item.err = results[i], err
		close(item.done)
	}
}
