package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bucketworker/bucket-worker/buckets"
)

// IngestMode says what bucket-ingest does with an event (INGEST_MODE,
// contract §7).
type IngestMode string

// The ingest modes.
const (
	// IngestStore: this worker is the ingest — it stores the event,
	// upserts the contact, applies journey exits and evaluates.
	IngestStore IngestMode = "store"
	// IngestEvaluate: another writer stored the event and upserted the
	// contact; only evaluate.
	IngestEvaluate IngestMode = "evaluate"
	// IngestOff: bucket-ingest is not registered.
	IngestOff IngestMode = "off"
)

// ContactUpdated is the event an application sends when only a contact's
// properties changed; auto subscriptions include it.
const ContactUpdated = "contact:updated"

// reservedPrefix starts every event the worker emits; it never evaluates
// buckets for one (contract §5.7).
const reservedPrefix = "bucket:"

// IngestEvent is one validated bucket-ingest payload and its event name.
type IngestEvent struct {
	Event     string
	UserID    string
	UserEmail *string
	// Properties and ContactProperties are the objects as sent, stored as
	// they are, and decoded as Hogsend reads them (buckets.DecodeJSON);
	// nil when absent.
	Properties            map[string]any
	PropertiesJSON        json.RawMessage
	ContactProperties     map[string]any
	ContactPropertiesJSON json.RawMessage
	OccurredAt            *time.Time
	IdempotencyKey        *string
}

// The limits of an ingested event (contract §7).
const (
	// MaxKeyBytes bounds userId and idempotencyKey.
	MaxKeyBytes = 512
	// MaxClockSkew is how far ahead of the worker's clock an occurredAt may
	// be; a later one is clamped to the ingest time.
	MaxClockSkew = 10 * time.Minute
)

// ParseIngestPayload validates a bucket-ingest payload (contract §7):
// userId a non-empty string of at most MaxKeyBytes; userEmail a string;
// idempotencyKey a non-empty string of at most MaxKeyBytes outside the
// namespaces of transitions (bucket:) and retries (hatchet-run:);
// properties and contactProperties objects; occurredAt an RFC 3339 time
// Postgres can store. Every string must be UTF-8 without NUL, which
// decoding would hide. Other keys are ignored. Errors wrap ErrInvalidInput
// and name the field.
func ParseIngestPayload(event string, payload []byte) (IngestEvent, error) {
	ev := IngestEvent{Event: event}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidInput, field, fmt.Sprintf(format, args...))
	}
	if problem := stringProblem(event); problem != "" {
		return ev, bad("the event name", "%s", problem)
	}
	fields, err := objectFields(payload)
	if err != nil {
		return ev, fmt.Errorf("%w: the payload %v", ErrInvalidInput, err)
	}
	for _, field := range []string{"userId", "userEmail", "idempotencyKey", "occurredAt", "properties", "contactProperties"} {
		if problem := jsonTextProblem(fields[field]); problem != "" {
			return ev, bad(field, "%s", problem)
		}
	}
	str := func(field string) (*string, error) {
		raw, ok := fields[field]
		if !ok || string(raw) == "null" {
			return nil, nil
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, bad(field, "must be a string, not %s", raw)
		}
		return &s, nil
	}
	object := func(field string) (map[string]any, json.RawMessage, error) {
		raw, ok := fields[field]
		if !ok || string(raw) == "null" {
			return nil, nil, nil
		}
		v, err := buckets.DecodeJSON(raw)
		obj, isObject := v.(map[string]any)
		if err != nil || !isObject {
			return nil, nil, bad(field, "must be a JSON object, not %s", raw)
		}
		return obj, raw, nil
	}

	user, err := str("userId")
	switch {
	case err != nil:
		return ev, err
	case user == nil || strings.TrimSpace(*user) == "":
		return ev, bad("userId", "is required and must not be empty")
	case len(*user) > MaxKeyBytes:
		return ev, bad("userId", "has %d bytes; at most %d are allowed", len(*user), MaxKeyBytes)
	}
	ev.UserID = *user
	if ev.UserEmail, err = str("userEmail"); err != nil {
		return ev, err
	}
	if ev.IdempotencyKey, err = str("idempotencyKey"); err != nil {
		return ev, err
	}
	if k := ev.IdempotencyKey; k != nil {
		switch {
		case *k == "":
			return ev, bad("idempotencyKey", "must not be empty (leave it out to store the event without one)")
		case len(*k) > MaxKeyBytes:
			return ev, bad("idempotencyKey", "has %d bytes; at most %d are allowed", len(*k), MaxKeyBytes)
		case strings.HasPrefix(*k, reservedPrefix), strings.HasPrefix(*k, runKeyPrefix):
			return ev, bad("idempotencyKey", "%q is in a namespace of the worker's own (%s…, %s…)", *k, reservedPrefix, runKeyPrefix)
		}
	}
	if ev.Properties, ev.PropertiesJSON, err = object("properties"); err != nil {
		return ev, err
	}
	if ev.ContactProperties, ev.ContactPropertiesJSON, err = object("contactProperties"); err != nil {
		return ev, err
	}
	at, err := str("occurredAt")
	if err != nil {
		return ev, err
	}
	if at != nil {
		t, err := time.Parse(time.RFC3339Nano, *at)
		switch {
		case err != nil:
			return ev, bad("occurredAt", "%q is not an RFC 3339 time", *at)
		case t.Year() < 1:
			return ev, bad("occurredAt", "%q is before the year 1, which Postgres does not store", *at)
		}
		ev.OccurredAt = &t
	}
	return ev, nil
}

// stringProblem is jsonTextProblem for a string as given: not UTF-8, or
// holding NUL.
func stringProblem(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.ContainsRune(s, 0):
		return "holds a NUL character"
	}
	return ""
}

// runKeyPrefix starts the key of an event stored by a Hatchet run without
// a key of its own: hatchet-run:<workflow run id>.
const runKeyPrefix = "hatchet-run:"

// IngestRequest is one event to ingest.
type IngestRequest struct {
	Event IngestEvent
	Mode  IngestMode // IngestStore or IngestEvaluate
	// RunID is the Hatchet workflow run id: a key-less event is stored as
	// hatchet-run:<RunID>, so a retry of the run never double-counts. ""
	// outside Hatchet stores a key-less event as it is.
	RunID string
}

// IngestOutput is the output of bucket-ingest (contract §7).
type IngestOutput struct {
	Stored      bool         `json:"stored"`
	Status      string       `json:"status,omitempty"`
	Reason      string       `json:"reason,omitempty"`
	Transitions []Transition `json:"transitions"`
	// Exited lists the journeys the event and its transitions ended.
	Exited []string `json:"exited"`
	// ClampedOccurredAt is true when occurredAt was more than MaxClockSkew
	// ahead and the event was stored as happening now.
	ClampedOccurredAt bool `json:"clampedOccurredAt,omitempty"`
}

// HandleIngest is bucket-ingest: a push with the event key and payload.
// A bucket:* key is ignored before anything else; an invalid payload is
// an ErrInvalidInput error and nothing is written.
func HandleIngest(ctx context.Context, d *Deps, mode IngestMode, event string, payload []byte, runID string) (IngestOutput, error) {
	if strings.HasPrefix(event, reservedPrefix) {
		return Ingest(ctx, d, IngestRequest{Event: IngestEvent{Event: event}, Mode: mode})
	}
	ev, err := ParseIngestPayload(event, payload)
	if err != nil {
		d.Metrics.ingestedAs(ResultInvalid, 1)
		return IngestOutput{}, err
	}
	return Ingest(ctx, d, IngestRequest{Event: ev, Mode: mode, RunID: runID})
}

// Ingest is the real-time path for one event (contract §7): a batch of
// one, ingested by the rounds every ingest goes through (ingestEvents) —
// with the single ingests of concurrent runs, when Deps has a Gatherer.
// In store mode one transaction upserts the contact and stores the event
// — or, when its key is stored already, writes nothing — exits the
// journeys the event ends, and evaluates the candidate buckets with their
// transitions. The pushes it enqueued are dispatched before it returns.
func Ingest(ctx context.Context, d *Deps, req IngestRequest) (IngestOutput, error) {
	ev := req.Event
	if ev.IdempotencyKey == nil && req.RunID != "" {
		ev.IdempotencyKey = ptr(runKeyPrefix + req.RunID)
	}
	var out IngestOutput
	var err error
	if d.Gatherer != nil && !strings.HasPrefix(ev.Event, reservedPrefix) {
		out, err = d.Gatherer.ingest(ctx, d, req.Mode, ev)
	} else {
		var results []IngestOutput
		results, _, err = ingestEvents(ctx, d, req.Mode, []IngestEvent{ev})
		out = results[0]
	}
	if err != nil {
		return IngestOutput{Transitions: []Transition{}, Exited: []string{}},
			fmt.Errorf("ingesting %q for user %q: %w", ev.Event, ev.UserID, err)
	}
	d.Metrics.ingestedAs(resultOf(req.Mode, out), 1)
	return out, nil
}

// occurredAt is when the event is stored as having happened: its
// occurredAt, or now when it has none or one more than MaxClockSkew ahead
// (a device with a wrong clock must neither lose its event nor stay in
// every window for good).
func occurredAt(ev IngestEvent, now time.Time) time.Time {
	if ev.OccurredAt == nil || clamped(ev, now) {
		return now
	}
	return *ev.OccurredAt
}

// clamped reports whether the event's occurredAt is too far ahead.
func clamped(ev IngestEvent, now time.Time) bool {
	return ev.OccurredAt != nil && ev.OccurredAt.Sub(now) > MaxClockSkew
}
