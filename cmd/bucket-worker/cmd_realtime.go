package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	v0 "github.com/hatchet-dev/hatchet/pkg/client"

	"github.com/bucketworker/bucket-worker/tasks"
)

// runIngest is the store path of bucket-ingest, in-process: it stores one
// event for a user and applies the transitions it causes.
func runIngest(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("ingest")
	ev := newEventFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	event, raw, err := ev.payload()
	if err != nil {
		return err
	}

	e, closeEngine, err := openEngine(ctx, env, false)
	if err != nil {
		return err
	}
	defer closeEngine()
	out, err := tasks.HandleIngest(ctx, e.deps, tasks.IngestStore, event, raw, "")
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
	case out.ClampedOccurredAt:
		fmt.Fprintf(env.stdout, "stored, as happening now: --occurred-at is more than %s ahead\n", tasks.MaxClockSkew)
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

// runExpire fires the expiry timer of one bucket:arm-expiry payload now,
// in-process, whatever its deadline.
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

// pushTimeout bounds a push: an unreachable Hatchet fails it after this
// long (contract §11).
const pushTimeout = 5 * time.Second

// runPush pushes one event to Hatchet as a producer would — the
// bucket-ingest payload of contract §7, checked by the same rules first —
// so that a running worker ingests it.
func runPush(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("push")
	ev := newEventFlags(fs)
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	event, payload, err := ev.payload()
	if err != nil {
		return err
	}
	if strings.HasPrefix(event, "bucket:") {
		return usageError{fmt.Sprintf("--event %q: bucket:* events are the worker's own; bucket-ingest ignores them", event)}
	}
	parsed, err := tasks.ParseIngestPayload(event, payload)
	if err != nil {
		return usageIfInvalid(err)
	}
	client, _, err := connectHatchet(env.getenv)
	if err != nil {
		return err
	}
	pushCtx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	meta := map[string]string{"userId": parsed.UserID}
	if parsed.IdempotencyKey != nil {
		meta["idempotencyKey"] = *parsed.IdempotencyKey
	}
	if err := client.Events().Push(pushCtx, event, payload, v0.WithEventMetadata(meta)); err != nil {
		return fmt.Errorf("pushing %q to Hatchet: %w", event, err)
	}
	if *asJSON {
		return writeJSON(env.stdout, map[string]any{"pushed": true, "event": event, "userId": parsed.UserID})
	}
	fmt.Fprintf(env.stdout, "pushed %s for %s\n", event, parsed.UserID)
	return nil
}
