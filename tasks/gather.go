package tasks

import (
	"context"
	"sync"
)

// GatherMax is the most single ingests one gathered round holds.
const GatherMax = 100

// Gatherer ingests the single events of concurrent bucket-ingest runs
// together. An event that arrives while no round is in flight goes at
// once, alone: an idle worker adds no wait. Those that arrive while one is
// in flight wait for it, and then go together in the next round, one
// transaction of the ingest's few statements for all of them
// (ingestEvents), where each run paid for its own: the round trips to
// PostgreSQL, more of an ingest's CPU than its statements take to run, are
// shared (docs/performance.md, *Round trips of an ingest*).
//
// A round holds at most GatherMax events, of distinct users and distinct
// keys, so it is one transaction, and each of its events is ingested with
// the semantics of its single ingest (contract §7): a round rolled back
// rolls back each of them whole. A round that fails is ingested again one
// event at a time, so that an event the database rejects fails its own run
// only.
//
// A running worker gathers (Deps.Gatherer); a command ingests each event
// alone.
type Gatherer struct {
	mu      sync.Mutex
	queue   []*gathered
	running bool
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
func NewGatherer() *Gatherer { return &Gatherer{} }

// ingest ingests ev in the next round and returns its result. When ctx
// ends first it returns at once; the round may still ingest the event, and
// a retry of the run then finds its key stored.
func (g *Gatherer) ingest(ctx context.Context, d *Deps, mode IngestMode, ev IngestEvent) (IngestOutput, error) {
	item := &gathered{ctx: ctx, mode: mode, ev: ev, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, item)
	if !g.running {
		g.running = true
		go g.drain(d)
	}
	g.mu.Unlock()
	select {
	case <-item.done:
		return item.out, item.err
	case <-ctx.Done():
		return IngestOutput{Transitions: []Transition{}, Exited: []string{}}, ctx.Err()
	}
}

// drain ingests the queue, a round at a time, until it is empty.
func (g *Gatherer) drain(d *Deps) {
	for {
		g.mu.Lock()
		round := g.next()
		if len(round) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.ingestRound(d, round)
	}
}

// next takes the next round off the queue: in order of arrival, the
// events of the first one's mode, at most GatherMax, each of a user and a
// key no earlier one in the round has. The others keep their place.
func (g *Gatherer) next() []*gathered {
	var round, rest []*gathered
	users, keys := map[string]bool{}, map[string]bool{}
	for _, item := range g.queue {
		key := item.ev.IdempotencyKey
		switch {
		case len(round) == GatherMax, item.mode != g.queue[0].mode, users[item.ev.UserID], key != nil && keys[*key]:
			rest = append(rest, item)
			continue
		}
		round = append(round, item)
		users[item.ev.UserID] = true
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
	for i, item := range round {
		item.out, item.err = results[i], err
		close(item.done)
	}
}
