package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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
func HandleBatch(ctx context.Context, d *Deps, mode IngestMode, payload []byte, runID string) (BatchOutput, error) {
	elements, err := ParseIngestBatch(payload)
	if err != nil {
		return BatchOutput{}, err
	}
	return IngestBatch(ctx, d, mode, elements, runID)
}

// IngestBatch ingests the valid elements with the semantics of as many
// single ingests (contract §7.1), through the rounds every ingest goes
// through (ingestEvents). An element without idempotencyKey is stored as
// hatchet-run:<runID>:<index>, so a retry of the run never counts it
// twice; outside Hatchet (runID "") it is stored without a key.
func IngestBatch(ctx context.Context, d *Deps, mode IngestMode, elements []BatchElement, runID string) (BatchOutput, error) {
	out := BatchOutput{Invalid: []BatchError{}, Transitions: []Transition{}, Exited: []string{}}
	var events []IngestEvent
	for _, el := range elements {
		if el.Err != nil {
			out.Invalid = append(out.Invalid, BatchError{Index: el.Index, Error: InvalidReason(el.Err)})
			continue
		}
		if el.Event.IdempotencyKey == nil && runID != "" {
			el.Event.IdempotencyKey = ptr(fmt.Sprintf("%s%s:%d", runKeyPrefix, runID, el.Index))
		}
		events = append(events, el.Event)
	}
	results, order, err := ingestEvents(ctx, d, mode, events)
	if err != nil {
		return out, err
	}
	d.Metrics.ingestedAs(ResultInvalid, len(out.Invalid))
	for _, res := range results {
		result := resultOf(mode, res)
		d.Metrics.ingestedAs(result, 1)
		switch result {
		case ResultStored:
			out.Stored++
		case ResultIgnored:
			out.Ignored++
		case ResultDuplicate:
			out.Duplicates++
		}
	}
	// The transitions follow the batch's order per user: each user's
	// events as they were ingested.
	for _, i := range order {
		out.Transitions = append(out.Transitions, results[i].Transitions...)
		for _, j := range results[i].Exited {
			if !slices.Contains(out.Exited, j) {
				out.Exited = append(out.Exited, j)
			}
		}
	}
	return out, nil
}
