package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// DefaultBatchEvent is the event key of a batch of events
// (INGEST_BATCH_EVENT, contract §7.1).
const DefaultBatchEvent = "events:batch"

// MaxBatchEvents is the most events one batch carries.
const MaxBatchEvents = 1000

// BatchElement is one event of a batch: its position, and the event or
// why it is invalid.
type BatchElement struct {
	Index int
	Event IngestEvent
	Err   error
}

// BatchError reports an invalid element of a batch.
type BatchError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// BatchOutput is the output of a batch ingest (contract §7.1).
type BatchOutput struct {
	Stored     int `json:"stored"`
	Duplicates int `json:"duplicates"`
	// Ignored counts the elements ingested without effect: a bucket:*
	// event, or a user who is erased.
	Ignored     int          `json:"ignored"`
	Invalid     []BatchError `json:"invalid"`
	Transitions []Transition `json:"transitions"`
	Exited      []string     `json:"exited"`
}

// ParseIngestBatch reads a batch payload, {"events": [{"event": name, ...the
// §7 payload}, ...]} with at most MaxBatchEvents elements. A payload of
// another shape is an ErrInvalidInput error; an element that is invalid
// carries its error and spoils none of the others.
func ParseIngestBatch(payload []byte) ([]BatchElement, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: the batch %s", ErrInvalidInput, fmt.Sprintf(format, args...))
	}
	if problem := jsonTextProblem(payload); problem != "" {
		return nil, bad("%s", problem)
	}
	fields, err := objectFields(payload)
	if err != nil {
		return nil, bad(`%v: {"events": [...]}`, err)
	}
	var events []json.RawMessage
	raw, ok := fields["events"]
	if !ok || string(raw) == "null" || json.Unmarshal(raw, &events) != nil {
		return nil, bad(`has no "events" list`)
	}
	if len(events) > MaxBatchEvents {
		return nil, bad("has %d events; at most %d are allowed", len(events), MaxBatchEvents)
	}
	elements := make([]BatchElement, len(events))
	for i, raw := range events {
		elements[i] = BatchElement{Index: i}
		elements[i].Event, elements[i].Err = ParseBatchElement(raw)
	}
	return elements, nil
}

// ParseBatchElement reads one element of a batch: an object with the
// event's name under "event" and the rest of the §7 payload, which
// ParseIngestPayload judges. Errors wrap ErrInvalidInput.
func ParseBatchElement(raw []byte) (IngestEvent, error) {
	fields, err := objectFields(raw)
	if err != nil {
		return IngestEvent{}, fmt.Errorf("%w: an element must be an event object", ErrInvalidInput)
	}
	var event string
	if json.Unmarshal(fields["event"], &event) != nil || event == "" {
		return IngestEvent{}, fmt.Errorf("%w: event is required: the event's name", ErrInvalidInput)
	}
	return ParseIngestPayload(event, raw)
}

// InvalidReason is what an ErrInvalidInput error says about the input,
// without the words "invalid input".
func InvalidReason(err error) string {
	return strings.TrimPrefix(err.Error(), ErrInvalidInput.Error()+": ")
}

// HandleBatch is bucket-ingest for a batch push (contract §7.1): a payload
// of another shape is an ErrInvalidInput error and nothing is written.
func HandleBatch(ctx context.Context, d *Deps, mode string, payload []byte, runID string) (BatchOutput, error) {
	elements, err := ParseIngestBatch(payload)
	if err != nil {
		return BatchOutput{}, err
	}
	return IngestBatch(ctx, d, mode, elements, runID)
}

// batchWriters is how many users of a batch are ingested at once; each
// user's events are ingested one after another.
const batchWriters = 4

// IngestBatch ingests the valid elements with the semantics of as many
// single ingests (contract §7.1): per user in order of occurredAt, then of
// position, each event in a transaction of its own, so that each one's
// joins and leaves are those its single ingest would make. An element
// without idempotencyKey is stored as hatchet-run:<runID>:<index>, so a
// retry of the run never counts it twice; outside Hatchet (runID "") it is
// stored without a key.
func IngestBatch(ctx context.Context, d *Deps, mode string, elements []BatchElement, runID string) (BatchOutput, error) {
	out := BatchOutput{Invalid: []BatchError{}, Transitions: []Transition{}, Exited: []string{}}
	now := d.Now()
	byUser := map[string][]BatchElement{}
	var users []string
	for _, el := range elements {
		if el.Err != nil {
			out.Invalid = append(out.Invalid, BatchError{Index: el.Index, Error: InvalidReason(el.Err)})
			continue
		}
		if el.Event.IdempotencyKey == nil && runID != "" {
			el.Event.IdempotencyKey = ptr(fmt.Sprintf("%s%s:%d", runKeyPrefix, runID, el.Index))
		}
		if _, seen := byUser[el.Event.UserID]; !seen {
			users = append(users, el.Event.UserID)
		}
		byUser[el.Event.UserID] = append(byUser[el.Event.UserID], el)
	}

	results := make([]IngestOutput, len(elements))
	work := make(chan string)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range min(batchWriters, len(users)) {
		wg.Go(func() {
			for user := range work {
				events := byUser[user]
				slices.SortStableFunc(events, func(a, b BatchElement) int {
					return occurredAt(a.Event, now).Compare(occurredAt(b.Event, now))
				})
				for _, el := range events {
					res, err := Ingest(ctx, d, IngestRequest{Event: el.Event, Mode: mode})
					if err != nil {
						mu.Lock()
						errs = append(errs, fmt.Errorf("element %d: %w", el.Index, err))
						mu.Unlock()
						break
					}
					results[el.Index] = res
				}
			}
		})
	}
	for _, user := range users {
		if ctx.Err() != nil {
			break
		}
		work <- user
	}
	close(work)
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return out, err
	}

	// The report follows the batch's order per user: each user's events
	// as they were ingested.
	for _, user := range users {
		for _, el := range byUser[user] {
			res := results[el.Index]
			switch {
			case res.Stored:
				out.Stored++
			case res.Status == StatusIgnored:
				out.Ignored++
			case mode == IngestStore:
				out.Duplicates++
			}
			out.Transitions = append(out.Transitions, res.Transitions...)
			for _, j := range res.Exited {
				if !slices.Contains(out.Exited, j) {
					out.Exited = append(out.Exited, j)
				}
			}
		}
	}
	return out, nil
}
