package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"unicode/utf8"
)

// eventFlags are the flags of a command that takes one event of
// bucket-ingest's payload (contract §7).
type eventFlags struct {
	fs                *flag.FlagSet
	event, user       *string
	email             *string
	properties        *string
	contactProperties *string
	occurredAt        *string
	idempotencyKey    *string
}

func newEventFlags(fs *flag.FlagSet) *eventFlags {
	return &eventFlags{
		fs:                fs,
		event:             fs.String("event", "", "event name (required)"),
		user:              fs.String("user", "", "user id (required)"),
		email:             fs.String("email", "", "the user's email"),
		properties:        fs.String("properties", "", "event properties, a JSON object"),
		contactProperties: fs.String("contact-properties", "", "contact properties to merge, a JSON object"),
		occurredAt:        fs.String("occurred-at", "", "when it happened, RFC 3339 (default now)"),
		idempotencyKey:    fs.String("idempotency-key", "", "store the event once under this key"),
	}
}

// payload returns the event name and the bucket-ingest payload the flags
// describe. JSON values are kept as written, numbers included; a string
// that is not UTF-8 is a usage error here, because encoding it would
// replace its bad bytes. A flag given empty is sent empty, for the payload
// rules to judge.
func (f *eventFlags) payload() (string, json.RawMessage, error) {
	if *f.event == "" {
		return "", nil, usageError{"--event is required"}
	}
	given := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	payload := map[string]any{"userId": *f.user}
	for _, field := range []struct {
		name, flag string
		value      string
		isJSON     bool
	}{
		{"userEmail", "email", *f.email, false},
		{"properties", "properties", *f.properties, true},
		{"contactProperties", "contact-properties", *f.contactProperties, true},
		{"occurredAt", "occurred-at", *f.occurredAt, false},
		{"idempotencyKey", "idempotency-key", *f.idempotencyKey, false},
	} {
		switch {
		case !given[field.flag]:
		case field.isJSON && !json.Valid([]byte(field.value)):
			return "", nil, usageError{fmt.Sprintf("--%s: not JSON", field.flag)}
		case field.isJSON:
			payload[field.name] = json.RawMessage(field.value)
		default:
			payload[field.name] = field.value
		}
	}
	for flagName, value := range map[string]string{"event": *f.event, "user": *f.user, "email": *f.email,
		"occurred-at": *f.occurredAt, "idempotency-key": *f.idempotencyKey} {
		if !utf8.ValidString(value) {
			return "", nil, usageError{fmt.Sprintf("--%s: not valid UTF-8", flagName)}
		}
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		return "", nil, usageError{fmt.Sprintf("encoding the payload: %v", err)}
	}
	return *f.event, raw, nil
}
