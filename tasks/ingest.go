package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/bucketworker/bucket-worker/db"
)

// The ingest modes (INGEST_MODE, contract §7).
const (
	// IngestStore: this worker is the ingest — it stores the event,
	// upserts the contact, applies journey exits and evaluates.
	IngestStore = "store"
	// IngestEvaluate: another writer stored the event and upserted the
	// contact; only evaluate.
	IngestEvaluate = "evaluate"
	// IngestOff: bucket-ingest is not registered.
	IngestOff = "off"
)

// ContactUpdated is the event an application sends when only a contact's
// properties changed; auto subscriptions include it.
const ContactUpdated = "contact:updated"

// reservedPrefix starts every event the worker emits; it never evaluates
// buckets for one (contract §5.7).
const reservedPrefix = "bucket:"

// IngestEvent is one validated bucket-ingest payload and its event name.
type IngestEvent struct {
	Event             string
	UserID            string
	UserEmail         *string
	Properties        map[string]any // nil when absent
	ContactProperties map[string]any // nil when absent
	OccurredAt        *time.Time
	IdempotencyKey    *string
}

// ParseIngestPayload validates a bucket-ingest payload (contract §7):
// userId a non-empty string; userEmail and idempotencyKey strings;
// properties and contactProperties objects; occurredAt an RFC 3339 time.
// Other keys are ignored. Errors wrap ErrInvalidInput and name the field.
func ParseIngestPayload(event string, payload []byte) (IngestEvent, error) {
	ev := IngestEvent{Event: event}
	fields, err := objectFields(payload)
	if err != nil {
		return ev, fmt.Errorf("%w: the payload %v", ErrInvalidInput, err)
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s %s", ErrInvalidInput, field, fmt.Sprintf(format, args...))
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
	object := func(field string) (map[string]any, error) {
		raw, ok := fields[field]
		if !ok || string(raw) == "null" {
			return nil, nil
		}
		obj, err := objectFields(raw)
		if err != nil {
			return nil, bad(field, "must be a JSON object, not %s", raw)
		}
		out := make(map[string]any, len(obj))
		for k, v := range obj {
			var value any
			if err := json.Unmarshal(v, &value); err != nil {
				return nil, bad(field, "%q: %v", k, err)
			}
			out[k] = value
		}
		return out, nil
	}

	user, err := str("userId")
	switch {
	case err != nil:
		return ev, err
	case user == nil || strings.TrimSpace(*user) == "":
		return ev, bad("userId", "is required and must not be empty")
	}
	ev.UserID = *user
	if ev.UserEmail, err = str("userEmail"); err != nil {
		return ev, err
	}
	if ev.IdempotencyKey, err = str("idempotencyKey"); err != nil {
		return ev, err
	}
	if ev.IdempotencyKey != nil && *ev.IdempotencyKey == "" {
		return ev, bad("idempotencyKey", "must not be empty")
	}
	if ev.Properties, err = object("properties"); err != nil {
		return ev, err
	}
	if ev.ContactProperties, err = object("contactProperties"); err != nil {
		return ev, err
	}
	at, err := str("occurredAt")
	if err != nil {
		return ev, err
	}
	if at != nil {
		t, err := time.Parse(time.RFC3339Nano, *at)
		if err != nil {
			return ev, bad("occurredAt", "%q is not an RFC 3339 time", *at)
		}
		ev.OccurredAt = &t
	}
	return ev, nil
}

// objectFields decodes a JSON object into its raw fields.
func objectFields(data []byte) (map[string]json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, errors.New("must be a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("is not valid JSON: %v", err)
	}
	return fields, nil
}

// IngestRequest is one event to ingest.
type IngestRequest struct {
	Event IngestEvent
	Mode  string // IngestStore or IngestEvaluate
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
}

// HandleIngest is bucket-ingest: a push with the event key and payload.
// A bucket:* key is ignored before anything else; an invalid payload is
// an ErrInvalidInput error and nothing is written.
func HandleIngest(ctx context.Context, d *Deps, mode, event string, payload []byte, runID string) (IngestOutput, error) {
	if strings.HasPrefix(event, reservedPrefix) {
		return Ingest(ctx, d, IngestRequest{Event: IngestEvent{Event: event}, Mode: mode})
	}
	ev, err := ParseIngestPayload(event, payload)
	if err != nil {
		return IngestOutput{}, err
	}
	return Ingest(ctx, d, IngestRequest{Event: ev, Mode: mode, RunID: runID})
}

// errDuplicateEvent rolls back an ingest whose event was stored before.
var errDuplicateEvent = errors.New("event already stored")

// Ingest is the real-time path (contract §7): in one transaction, the
// contact upsert and the event (store mode), the journey exits of the
// event, and the evaluation of the candidate buckets with their
// transitions. The pushes it enqueued are dispatched before it returns.
func Ingest(ctx context.Context, d *Deps, req IngestRequest) (IngestOutput, error) {
	ev := req.Event
	out := IngestOutput{Transitions: []Transition{}, Exited: []string{}}
	if strings.HasPrefix(ev.Event, reservedPrefix) {
		out.Status, out.Reason = "ignored", "reserved_prefix"
		return out, nil
	}
	candidates, err := switchedOn(ctx, d, d.Buckets.Candidates(ev.Event, slices.Sorted(maps.Keys(ev.ContactProperties))))
	if err != nil {
		return out, err
	}
	now := d.Now()
	outcome, err := transact(ctx, d, func(ctx context.Context, tx bun.Tx) (Outcome, error) {
		var u subject
		var erased bool
		var exited []db.JourneyState
		var err error
		if req.Mode == IngestStore {
			var contact *db.Contact
			contact, exited, err = storeEvent(ctx, tx, d, req, now)
			erased = err == nil && contact == nil
			u = subjectOf(ev.UserID, deref(ev.UserEmail), contact)
		} else {
			u, erased, err = liveSubject(ctx, tx, ev.UserID, deref(ev.UserEmail))
		}
		if err != nil || erased {
			out.Status, out.Reason = ignoredIf(erased, "contact_deleted")
			return Outcome{}, err
		}
		transitions, err := evaluateUser(ctx, tx, d, u, candidates, SourceEvent, now)
		transitions.Exited = append(exited, transitions.Exited...)
		return transitions, err
	})
	switch {
	case errors.Is(err, errDuplicateEvent):
		return out, nil
	case err != nil:
		return out, fmt.Errorf("ingesting %q for user %q: %w", ev.Event, ev.UserID, err)
	}
	out.Stored = req.Mode == IngestStore && out.Status == ""
	out.Transitions = append(out.Transitions, outcome.Transitions...)
	for _, s := range outcome.Exited {
		if !slices.Contains(out.Exited, s.JourneyID) {
			out.Exited = append(out.Exited, s.JourneyID)
		}
	}
	return out, nil
}

// storeEvent is the store-mode part of an ingest: upsert the contact,
// store the event (or roll everything back when its key is taken) and
// exit the journeys it ends. It returns the contact as patched, or nil,
// having written nothing, when the user is erased.
func storeEvent(ctx context.Context, tx bun.IDB, d *Deps, req IngestRequest, now time.Time) (*db.Contact, []db.JourneyState, error) {
	ev := req.Event
	patch := db.ContactPatch{UserID: ev.UserID, Email: ev.UserEmail, Now: now}
	if ev.ContactProperties != nil {
		patch.Properties, _ = json.Marshal(ev.ContactProperties)
	}
	contact, err := db.UpsertContact(ctx, tx, patch)
	if err != nil || contact == nil {
		return nil, nil, err
	}
	key := ev.IdempotencyKey
	if key == nil && req.RunID != "" {
		key = ptr("hatchet-run:" + req.RunID)
	}
	props := json.RawMessage(`{}`)
	if ev.Properties != nil {
		props, _ = json.Marshal(ev.Properties)
	}
	occurred := now
	if ev.OccurredAt != nil {
		occurred = *ev.OccurredAt
	}
	stored, err := db.InsertUserEvent(ctx, tx, &db.UserEvent{UserID: ev.UserID, Event: ev.Event, Properties: props,
		IdempotencyKey: key, Source: ptr("ingest"), OccurredAt: occurred})
	if err != nil {
		return nil, nil, err
	}
	if !stored {
		return nil, nil, errDuplicateEvent
	}
	exited, err := db.ExitJourneys(ctx, tx, []string{ev.UserID}, d.Journeys.ExitingOn(ev.Event, ev.Properties), now)
	return contact, exited, err
}

func ignoredIf(cond bool, reason string) (status, why string) {
	if cond {
		return "ignored", reason
	}
	return "", ""
}
