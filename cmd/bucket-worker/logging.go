package main

import (
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/lmittmann/tint"
	"golang.org/x/term"

	"github.com/bucketworker/bucket-worker/db"
)

// newLogger builds the process logger: tint's coloured text on a terminal,
// plain text elsewhere, or JSON. Logs always go to stderr, so that --json
// output on stdout stays one clean document.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
	}
	colour := false
	terminal := w
	if r, ok := w.(*redactor); ok {
		terminal = r.w
	}
	if f, ok := terminal.(*os.File); ok {
		colour = term.IsTerminal(int(f.Fd()))
	}
	return slog.New(tint.NewHandler(w, &tint.Options{
		Level:      level,
		TimeFormat: time.DateTime,
		NoColor:    !colour,
	}))
}

// redactor writes to w with every secret of the process replaced by xxxxx:
// the password of DATABASE_URL or --database-url, in every form a
// connection string writes it (db.Secrets), and HATCHET_CLIENT_TOKEN.
// Everything the worker writes to stderr — its logs, the SDK's, a
// command's error line — goes through it, so that no message anywhere,
// ours or a library's, can print them. Each record is one Write.
type redactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets func() []string
}

func (r *redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	masked := db.Mask(string(p), r.secrets())
	if _, err := io.WriteString(r.w, masked); err != nil {
		return 0, err
	}
	return len(p), nil
}

// secrets are what env must never print: read when a line is written,
// since --database-url is parsed with the command's own flags.
func (env *environment) secrets() []string {
	out := db.Secrets(env.getenv("DATABASE_URL"))
	if env.flags.databaseURL != "" {
		out = append(out, db.Secrets(env.flags.databaseURL)...)
	}
	env.mu.Lock()
	names := append([]string{"HATCHET_CLIENT_TOKEN", "POSTHOG_API_KEY"}, env.secretVars...)
	env.mu.Unlock()
	for _, name := range names {
		if v := env.getenv(name); v != "" {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}
