package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/posthog/posthog-go"

	"github.com/bucketworker/bucket-worker/buckets/destination"
	"github.com/bucketworker/bucket-worker/db"
)

// PostHogSender sets and unsets person properties in PostHog (contract
// §15.1) with PostHog's own Go client: each delivery is a "$set" event
// carrying $set or $unset, with the delivery's own UUID, and is delivered
// once the client reports that PostHog accepted its batch. The client
// does not retry: a failed delivery backs off in the table like any other.
type PostHogSender struct {
	client posthog.Client
	mu     sync.Mutex
	// waiting are the sends that wait for their callback, by event UUID.
	waiting map[string]chan error
}

// PostHogFlush is how often the client sends what it has queued.
const PostHogFlush = 100 * time.Millisecond

// NewPostHogSender returns a sender to the PostHog project of the API key
// at host.
func NewPostHogSender(apiKey, host string) (*PostHogSender, error) {
	s := &PostHogSender{waiting: map[string]chan error{}}
	noRetries := 0
	client, err := posthog.NewWithConfig(apiKey, posthog.Config{
		Endpoint:   host,
		Interval:   PostHogFlush,
		BatchSize:  DeliveryBatch,
		MaxRetries: &noRetries,
		Callback:   s,
		Logger:     quietPostHog{},
	})
	if err != nil {
		return nil, fmt.Errorf("POSTHOG_HOST %q: %w", host, err)
	}
	s.client = client
	return s, nil
}

// Close sends what the client holds and stops it.
func (s *PostHogSender) Close() error { return s.client.Close() }

// Send enqueues each delivery with the client and waits for PostHog's
// answer about each, or for ctx to end.
func (s *PostHogSender) Send(ctx context.Context, deliveries []db.Delivery) []error {
	errs := make([]error, len(deliveries))
	answers := make([]chan error, len(deliveries))
	for i, d := range deliveries {
		var props posthog.Properties
		if err := json.Unmarshal(d.Payload, &props); err != nil {
			errs[i] = fmt.Errorf("reading the delivery: %w", err)
			continue
		}
		id := deliveryUUID(d)
		answers[i] = make(chan error, 1)
		s.mu.Lock()
		s.waiting[id] = answers[i]
		s.mu.Unlock()
		err := s.client.Enqueue(posthog.Capture{Uuid: id, DistinctId: d.UserID, Event: "$set", Properties: props, Timestamp: d.CreatedAt})
		if err != nil {
			s.forget(id)
			answers[i], errs[i] = nil, err
		}
	}
	for i, answer := range answers {
		if answer == nil {
			continue
		}
		select {
		case errs[i] = <-answer:
		case <-ctx.Done():
			errs[i] = fmt.Errorf("PostHog did not answer in time: %w", ctx.Err())
			s.forget(deliveryUUID(deliveries[i]))
		}
	}
	return errs
}

func (s *PostHogSender) forget(id string) {
	s.mu.Lock()
	delete(s.waiting, id)
	s.mu.Unlock()
}

// Success is the client's callback for an event PostHog accepted.
func (s *PostHogSender) Success(m posthog.APIMessage) { s.answer(m, nil) }

// Failure is the client's callback for an event it gave up on.
func (s *PostHogSender) Failure(m posthog.APIMessage, err error) {
	if err == nil {
		err = errors.New("PostHog refused the event")
	}
	s.answer(m, err)
}

func (s *PostHogSender) answer(m posthog.APIMessage, err error) {
	var id string
	switch m := m.(type) {
	case posthog.CaptureInApi:
		id = m.Uuid
	case posthog.Capture:
		id = m.Uuid
	}
	s.mu.Lock()
	ch, ok := s.waiting[id]
	delete(s.waiting, id)
	s.mu.Unlock()
	if ok {
		ch <- err
	}
}

// deliveryUUID is the UUID of a delivery's event: the same on every
// attempt, so that PostHog can tell a retry from a new event.
func deliveryUUID(d db.Delivery) string {
	return messageID(destination.PostHog, d.IdempotencyKey)[len("msg_"):]
}

// quietPostHog keeps the client's own log lines out: the deliverer logs
// what failed, once.
type quietPostHog struct{}

func (quietPostHog) Debugf(string, ...any) {}
func (quietPostHog) Logf(string, ...any)   {}
func (quietPostHog) Warnf(string, ...any)  {}
func (quietPostHog) Errorf(string, ...any) {}
