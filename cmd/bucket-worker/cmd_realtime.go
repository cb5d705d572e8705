package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bucketworker/bucket-worker/tasks"
)

// runIngest is the store path of bucket-ingest, in-process: it stores one
// event for a user and applies the transitions it causes.
func runIngest(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("ingest")
	event := fs.String("event", "", "event name (required)")
	user := fs.String("user", "", "user id (required)")
	email := fs.String("email", "", "the user's email")
	properties := fs.String("properties", "", "event properties, a JSON object")
	contactProps := fs.String("contact-properties", "", "contact properties to merge, a JSON object")
	occurredAt := fs.String("occurred-at", "", "when it happened, RFC 3339 (default now)")
	key := fs.String("idempotency-key", "", "store the event once under this key")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *event == "" {
		return usageError{"--event is required"}
	}
	payload := map[string]any{"userId": *user}
	set := func(field, value string, isJSON bool) error {
		switch {
		case value == "":
		case isJSON:
			var v any
			if err := json.Unmarshal([]byte(value), &v); err != nil {
				return usageError{fmt.Sprintf("--%s: not JSON: %v", flagName(field), err)}
			}
			payload[field] = v
		default:
			payload[field] = value
		}
		return nil
	}
	for _, err := range []error{
		set("userEmail", *email, false), set("properties", *properties, true),
		set("contactProperties", *contactProps, true), set("occurredAt", *occurredAt, false),
		set("idempotencyKey", *key, false),
	} {
		if err != nil {
			return err
		}
	}
	raw, _ := json.Marshal(payload)

	e, closeEngine, err := openEngine(ctx, env, false)
	if err != nil {
		return err
	}
	defer closeEngine()
	out, err := tasks.HandleIngest(ctx, e.deps, tasks.IngestStore, *event, raw, "")
	if err != nil {
		return usageIfInvalid(err)
	}
	if *asJSON {
		return writeJSON(env.stdout, out)
	}
	switch {
	case out.Status != "":
		fmt.Fprintf(env.stdout, "%s: %s\n", out.Status, out.Reason)
	case !out.Stored:
		fmt.Fprintln(env.stdout, "not stored: an event with this idempotency key is already stored")
	default:
		fmt.Fprintln(env.stdout, "stored")
	}
	for _, t := range out.Transitions {
		note := ""
		if t.Suppressed {
			note = " (entry limit: no event)"
		}
		fmt.Fprintf(env.stdout, "%s %s %s (epoch %d)%s\n", t.UserID, t.Transition, t.BucketID, t.Epoch, note)
	}
	if len(out.Exited) > 0 {
		fmt.Fprintf(env.stdout, "exited journeys: %s\n", strings.Join(out.Exited, ", "))
	}
	return nil
}

// flagName turns a payload field into its flag: contactProperties →
// contact-properties.
func flagName(field string) string {
	var b strings.Builder
	for _, r := range field {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('-')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// runExpire is what a bucket-expiry timer does when it wakes, in-process
// and without the sleep.
func runExpire(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("expire")
	payload := fs.String("payload", "", "the bucket:arm-expiry payload, a JSON object (required)")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	armed, err := tasks.ParseArmExpiry([]byte(*payload))
	if err != nil {
		return usageIfInvalid(err)
	}
	e, closeEngine, err := openEngine(ctx, env, false)
	if err != nil {
		return err
	}
	defer closeEngine()
	res, err := tasks.Expire(ctx, e.deps, armed)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(env.stdout, res)
	}
	switch {
	case res.Reason != "":
		fmt.Fprintf(env.stdout, "%s: %s\n", res.Status, res.Reason)
	default:
		fmt.Fprintf(env.stdout, "%s: membership %s\n", res.Status, res.RowID)
	}
	return nil
}

// runForget honours an erasure request: the user's contact and memberships
// are soft-deleted without emitting, and no path touches the user again.
func runForget(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("forget")
	user := fs.String("user", "", "user id (required)")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return usageError{"--user is required"}
	}
	e, closeEngine, err := openEngine(ctx, env, false)
	if err != nil {
		return err
	}
	defer closeEngine()
	out, err := tasks.Forget(ctx, e.deps, *user)
	if err != nil {
		return usageIfInvalid(err)
	}
	if *asJSON {
		return writeJSON(env.stdout, out)
	}
	fmt.Fprintf(env.stdout, "user %s forgotten: %d contact(s), %d membership(s) soft-deleted, nothing emitted\n",
		out.UserID, out.Contacts, out.Memberships)
	return nil
}
