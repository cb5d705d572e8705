// Package destination holds the outbound webhook destinations of contract
// §15.2: where a bucket's transitions are sent, besides Hatchet, as
// Hogsend 0.8's webhook events. It loads and validates their definitions
// from DEFINITIONS_DIR/destinations/ and does no I/O beyond reading them:
// the senders are the engine's.
package destination

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// The webhook event types of Hogsend's catalog that a destination may
// subscribe to, and the one `destinations test` sends.
const (
	EventEntered = "bucket.entered"
	EventLeft    = "bucket.left"
	EventTest    = "webhook.test"
)

// PostHog is the id of the destination of PostHog's person properties
// (contract §15.1), which a webhook may not take.
const PostHog = "posthog"

// Catalog is the event types a destination may subscribe to.
var Catalog = []string{EventEntered, EventLeft}

// Webhook is one outbound webhook destination.
type Webhook struct {
	ID  string
	URL string
	// Events are the catalog's event types it receives, Buckets the
	// buckets whose transitions it receives (every bucket when empty).
	Events  []string
	Buckets []string
	// SecretEnv names the variable that holds its signing secret,
	// "whsec_" and base64; the secret itself is never in a file.
	SecretEnv string
	Enabled   bool
	File      string
	// bucketsPath is where Buckets sits in File.
	bucketsPath string
}

// Wants reports whether the destination receives the event type for a
// transition of the bucket.
func (w *Webhook) Wants(event, bucketID string) bool {
	return slices.Contains(w.Events, event) && (len(w.Buckets) == 0 || slices.Contains(w.Buckets, bucketID))
}

var keys = []string{"id", "url", "events", "buckets", "secretEnv", "enabled"}

// envName is the form of an environment variable's name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Load reads every destination in the folder "destinations" of fsys. The
// report holds every error; the destinations returned are the valid ones,
// in file order.
func Load(fsys fs.FS) ([]*Webhook, *definition.Report) {
	report := &definition.Report{}
	var loaded []*Webhook
	seen := map[string]string{}
	for _, n := range definition.ReadDir(fsys, "destinations", report) {
		mark := len(report.Errors)
		w, ok := decode(n)
		if !ok || len(report.Errors) > mark {
			continue
		}
		if first, dup := seen[w.ID]; dup {
			n.Errorf("duplicate destination id %q (first defined in %s)", w.ID, first)
			continue
		}
		seen[w.ID] = n.File()
		loaded = append(loaded, w)
	}
	return loaded, report
}

func decode(n *definition.Node) (*Webhook, bool) {
	fields, ok := n.Fields(keys...)
	if !ok {
		return nil, false
	}
	w := &Webhook{Enabled: true, File: n.File()}
	valid := true
	str := func(key string, check func(f *definition.Node, s string) bool) string {
		f, ok := fields[key]
		if !ok {
			n.Missing(key)
			valid = false
			return ""
		}
		s, ok := f.String()
		if !ok || !check(f, s) {
			valid = false
		}
		return s
	}
	w.ID = str("id", func(f *definition.Node, id string) bool {
		switch {
		case !definition.IDPattern.MatchString(id):
			f.Errorf("invalid id %q: use 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", id)
			return false
		case id == PostHog:
			f.Errorf("%q is the id of PostHog's destination: give the webhook another", id)
			return false
		}
		return true
	})
	w.URL = str("url", checkURL)
	w.SecretEnv = str("secretEnv", func(f *definition.Node, name string) bool {
		if !envName.MatchString(name) || strings.HasPrefix(name, "whsec_") {
			f.Errorf("must name an environment variable (letters, digits and '_'), not hold the secret")
			return false
		}
		return true
	})
	if f, ok := fields["events"]; ok {
		items, ok := f.List()
		valid = valid && ok
		for _, item := range items {
			e, ok := item.String()
			switch {
			case !ok:
				valid = false
			case !slices.Contains(Catalog, e):
				item.Errorf("unknown event type %q: use %s", e, strings.Join(Catalog, " or "))
				valid = false
			case slices.Contains(w.Events, e):
				item.Errorf("repeated event type %q", e)
				valid = false
			default:
				w.Events = append(w.Events, e)
			}
		}
		if ok && len(items) == 0 {
			f.Errorf("must list at least one event type")
			valid = false
		}
	} else {
		n.Missing("events")
		valid = false
	}
	if f, ok := fields["buckets"]; ok {
		w.bucketsPath = f.Path()
		items, ok := f.List()
		valid = valid && ok
		for _, item := range items {
			id, ok := item.String()
			valid = valid && ok
			w.Buckets = append(w.Buckets, id)
		}
		if ok && len(items) == 0 {
			f.Errorf("must list at least one bucket, or be left out for every bucket")
			valid = false
		}
	}
	if f, ok := fields["enabled"]; ok {
		b, ok := f.Bool()
		valid = valid && ok
		w.Enabled = b
	}
	return w, valid
}

// checkURL accepts an http(s) URL with a host; plain http only to a
// loopback host, where nothing travels over a network.
func checkURL(f *definition.Node, raw string) bool {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold credentials
		}
		f.Errorf("invalid URL: %v", err)
		return false
	case u.Scheme != "https" && u.Scheme != "http":
		f.Errorf("the URL must be http(s), not %q", u.Scheme)
		return false
	case u.Host == "" || u.Hostname() == "":
		f.Errorf("the URL has no host")
		return false
	case u.User != nil:
		f.Errorf("the URL must not hold credentials: sign with secretEnv")
		return false
	case u.Scheme == "http" && !loopback(u.Hostname()):
		f.Errorf("plain http only to a loopback host (localhost, 127.0.0.1, ::1); use https")
		return false
	}
	return true
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckBuckets returns an error for every bucket a destination's filter
// names that is not loaded; known reports whether a bucket id is.
func CheckBuckets(ws []*Webhook, known func(bucketID string) bool) definition.Errors {
	var errs definition.Errors
	for _, w := range ws {
		for i, id := range w.Buckets {
			if !known(id) {
				errs = append(errs, definition.Error{File: w.File, Path: fmt.Sprintf("%s[%d]", w.bucketsPath, i),
					Message: fmt.Sprintf("no bucket has id %q", id)})
			}
		}
	}
	return errs
}
