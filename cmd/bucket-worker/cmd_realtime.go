package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
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

	e, closeEngine, err := openEngine(ctx, env, offline)
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
	e, closeEngine, err := openEngine(ctx, env, offline)
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
	e, closeEngine, err := openEngine(ctx, env, offline)
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
	batchFile := fs.String("batch", "", "push the events of this NDJSON file (- for standard input), one §7.1 element a line, in batches")
	batchSize := fs.Int("batch-size", 500, fmt.Sprintf("events per batch with --batch, at most %d", tasks.MaxBatchEvents))
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *batchFile != "" {
		if fs.NFlag() > countSet(fs, "batch", "batch-size", "json") {
			return usageError{"--batch takes the events from the file: give no --event, --user or other event flag"}
		}
		return pushBatches(ctx, env, *batchFile, *batchSize, *asJSON)
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

// countSet is how many of the named flags were given.
func countSet(fs *flag.FlagSet, names ...string) int {
	n := 0
	fs.Visit(func(f *flag.Flag) {
		if slices.Contains(names, f.Name) {
			n++
		}
	})
	return n
}

// pushBatches pushes the NDJSON events of the file to INGEST_BATCH_EVENT in
// batches of size (contract §7.1). Every line is checked first, as
// bucket-ingest would check it: a bad line stops the command before
// anything is pushed, naming the line.
func pushBatches(ctx context.Context, env *environment, file string, size int, asJSON bool) error {
	if size < 1 || size > tasks.MaxBatchEvents {
		return usageError{fmt.Sprintf("--batch-size %d: use 1 to %d", size, tasks.MaxBatchEvents)}
	}
	key := env.getenv("INGEST_BATCH_EVENT")
	if key == "" {
		key = tasks.DefaultBatchEvent
	}
	var in io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return usageError{fmt.Sprintf("--batch: %v", err)}
		}
		defer f.Close()
		in = f
	}
	var lines []json.RawMessage
	scanner := bufio.NewScanner(in)
	scanner.Buffer(make([]byte, 64*1024), 16<<20)
	for n := 1; scanner.Scan(); n++ {
		line := bytes.TrimSpace(scanner.Bytes())
		if len(line) == 0 {
			continue
		}
		if _, err := tasks.ParseBatchElement(line); err != nil {
			return usageError{fmt.Sprintf("%s:%d: %s", file, n, tasks.InvalidReason(err))}
		}
		lines = append(lines, slices.Clone(line))
	}
	if err := scanner.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	client, _, err := connectHatchet(env.getenv)
	if err != nil {
		return err
	}
	batches := 0
	for chunk := range slices.Chunk(lines, size) {
		payload, err := json.Marshal(map[string]any{"events": chunk})
		if err != nil {
			return err
		}
		pushCtx, cancel := context.WithTimeout(ctx, pushTimeout)
		err = client.Events().Push(pushCtx, key, json.RawMessage(payload),
			v0.WithEventMetadata(map[string]string{"batchEvents": strconv.Itoa(len(chunk))}))
		cancel()
		if err != nil {
			return fmt.Errorf("pushing batch %d (%d of %d events pushed) to Hatchet: %w", batches+1, batches*size, len(lines), err)
		}
		batches++
	}
	if asJSON {
		return writeJSON(env.stdout, map[string]any{"pushed": len(lines), "batches": batches, "event": key})
	}
	fmt.Fprintf(env.stdout, "pushed %d events in %d batches to %s\n", len(lines), batches, key)
	return nil
}
