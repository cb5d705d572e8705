// Command bucket-worker is the buckets engine of Hogsend as a Hatchet
// worker: it keeps bucket memberships in Postgres and emits every join and
// leave once as a Hatchet event. Run it without arguments for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
)

// A command is one subcommand of the binary.
type command struct {
	name    string
	args    string
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

func commands() []command {
	return []command{
		{"run", "", "migrate, load definitions and serve the Hatchet tasks until SIGINT/SIGTERM", runWorker},
		{"migrate", "", "apply the database migrations and exit", runMigrate},
		{"validate", "[--json]", "load and check the definitions, without a database", runValidate},
		{"list", "[--json]", "every loaded bucket with its switches, size and journeys", runList},
		{"stats", "[--bucket ID] [--period hour|day|week] [--since T] [--json]", "per bucket: size, entered, left, average dwell and the size over time, from the membership rows", runStats},
		{"members", "--bucket ID [--status active|left] [--limit N] [--json]", "membership rows of a bucket, newest first", runMembers},
		{"reconcile", "[--bucket ID]... [--dry-run] [--json]", "one reconcile sweep in-process; pushes go out when Hatchet is configured", runReconcile},
		{"ingest", "--event E --user U [--email E] [--properties JSON] [--contact-properties JSON] [--occurred-at T] [--idempotency-key K] [--json]",
			"store one event in-process and apply the joins and leaves it causes", runIngest},
		{"push", "--event E --user U [--email E] [--properties JSON] [--contact-properties JSON] [--occurred-at T] [--idempotency-key K] [--json] | --batch FILE [--batch-size N]",
			"push one event to Hatchet as a producer would, for a running worker to ingest; --batch pushes an NDJSON file in batches", runPush},
		{"expire", "--payload JSON [--json]", "fire the expiry timer of one bucket:arm-expiry payload now, in-process", runExpire},
		{"backfill", "--bucket ID [--mode auto|first-time|reeval] [--json]",
			"materialize a bucket's members without emitting joins, or re-evaluate it after a criteria change", runBackfill},
		{"outbox", "[--flush] [--retry-dead [--destination ID]] [--json]", "pushes waiting for Hatchet and deliveries waiting for each destination; --flush sends them now, --retry-dead queues the dead deliveries again", runOutbox},
		{"destinations", "[--json] | test ID", "the destinations besides Hatchet with their deliveries; test sends one signed webhook.test", runDestinations},
		{"explain", "--user U --bucket ID [--json]", "why a user is (not) in a bucket: every leaf's observed value, the membership, the next sweep", runExplain},
		{"history", "--user U [--bucket ID] [--json]", "every membership row and transition event of a user, oldest first", runHistory},
		{"forget", "--user U [--json]", "erasure: soft-delete the user's contact and memberships without emitting", runForget},
		{"enable", "ID", "switch a bucket on at runtime", runSwitch(true)},
		{"disable", "ID", "switch a bucket off at runtime: every path skips it, members stay", runSwitch(false)},
	}
}

// environment is what every command gets: the process's streams and
// environment, and the global flags.
type environment struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	flags          globalFlags
	// secretVars name the variables that hold secrets the definitions
	// point to (a webhook's secretEnv), read as they are found.
	mu         sync.Mutex
	secretVars []string
}

// keepSecret adds a variable whose value must never be printed.
func (env *environment) keepSecret(name string) {
	env.mu.Lock()
	defer env.mu.Unlock()
	env.secretVars = append(env.secretVars, name)
}

// globalFlags may stand before the command or among its own flags.
type globalFlags struct {
	databaseURL string
	definitions string
	logLevel    string
}

func (g *globalFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.databaseURL, "database-url", g.databaseURL, "Postgres URL (env DATABASE_URL)")
	fs.StringVar(&g.definitions, "definitions", g.definitions, "definitions folder (env DEFINITIONS_DIR)")
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "debug, info, warn or error (env LOG_LEVEL)")
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status: 0 success,
// 1 failure (with a one-line reason on stderr), 2 usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	env := &environment{stdout: stdout, getenv: getenv}
	env.stderr = &redactor{w: stderr, secrets: env.secrets}
	root := flag.NewFlagSet("bucket-worker", flag.ContinueOnError)
	root.SetOutput(io.Discard)
	env.flags.register(root)
	if err := root.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return 0
		}
		fmt.Fprintf(env.stderr, "bucket-worker: %v\n", err)
		printUsage(env.stderr)
		return 2
	}
	rest := root.Args()
	if len(rest) == 0 {
		printUsage(env.stderr)
		return 2
	}
	for _, cmd := range commands() {
		if cmd.name != rest[0] {
			continue
		}
		err := runCommand(ctx, cmd, env, rest[1:])
		var usage usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &usage):
			fmt.Fprintf(env.stderr, "bucket-worker %s: %v\n", cmd.name, err)
			return 2
		default:
			fmt.Fprintf(env.stderr, "bucket-worker %s: %v\n", cmd.name, err)
			return 1
		}
	}
	fmt.Fprintf(env.stderr, "bucket-worker: unknown command %q\n", rest[0])
	printUsage(env.stderr)
	return 2
}

// runCommand runs the command, turning a panic into a one-line error (with
// the stack on stderr only at LOG_LEVEL=debug): a failure never prints a
// Go panic trace (contract §11).
func runCommand(ctx context.Context, cmd command, env *environment, args []string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if env.getenv("LOG_LEVEL") == "debug" || env.flags.logLevel == "debug" {
				fmt.Fprintf(env.stderr, "%s\n", debug.Stack())
			}
			err = fmt.Errorf("internal error: %v (LOG_LEVEL=debug shows where)", r)
		}
	}()
	return cmd.run(ctx, env, args)
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: bucket-worker [--database-url URL] [--definitions DIR] [--log-level LEVEL] <command> [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, cmd := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n            %s\n", cmd.name, cmd.args, cmd.summary)
	}
}

// newFlagSet makes a command's flag set, with the global flags on it too.
func (env *environment) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("bucket-worker "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	env.flags.register(fs)
	return fs
}

// parse parses a command's flags; stray arguments are a usage error.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}
