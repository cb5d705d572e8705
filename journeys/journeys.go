// Package journeys holds the journey metadata this worker needs: which
// journey a bucket event starts and which events make a journey exit. It
// does not run journeys.
package journeys

import (
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// Rule is an event with optional property conditions on the event's
// properties, as in a journey's trigger and exitOn.
type Rule struct {
	Event string
	Where []*buckets.PropertyCondition
}

// Matches reports whether an event with the name and properties satisfies
// the rule.
func (r Rule) Matches(event string, properties map[string]any) bool {
	if r.Event != event {
		return false
	}
	for _, c := range r.Where {
		v, present := properties[c.Property]
		if !c.Holds(v, present, time.Time{}) { // a where has no relative dates
			return false
		}
	}
	return true
}

// Journey is the metadata of one journey definition.
type Journey struct {
	ID          string
	Name        string
	Description string
	Enabled     bool
	Trigger     Rule
	ExitOn      []Rule
	File        string
	// SourceBucketID and Dwell are set for a dwell reaction: the journey
	// that Hogsend's bucket.on("dwell", …) declares (contract §14).
	SourceBucketID string
	Dwell          *DwellSchedule
	// sourcePath is where SourceBucketID sits in File.
	sourcePath string
}

var journeyKeys = []string{
	"id", "name", "description", "enabled", "trigger", "exitOn",
	// Accepted and ignored: they belong to the journey runner.
	"entryLimit", "entryPeriod", "suppress", "tags", "version",
	// Read for a dwell reaction, accepted for the others (contract §2.3).
	"sourceBucketId", "reactionKind", "dwellSchedule",
}

// Load reads every journey definition in the folder "journeys" of fsys.
// The report holds every error and warning; the journeys returned are the
// valid ones, in file order.
func Load(fsys fs.FS) ([]*Journey, *definition.Report) {
	report := &definition.Report{}
	var loaded []*Journey
	seen := map[string]string{}
	for _, n := range definition.ReadDir(fsys, "journeys", report) {
		mark := len(report.Errors)
		j, ok := decodeJourney(n)
		if !ok || len(report.Errors) > mark {
			continue
		}
		if first, dup := seen[j.ID]; dup {
			n.Errorf("duplicate journey id %q (first defined in %s)", j.ID, first)
			continue
		}
		seen[j.ID] = n.File()
		loaded = append(loaded, j)
	}
	return loaded, report
}

func decodeJourney(n *definition.Node) (*Journey, bool) {
	fields, ok := n.Fields(journeyKeys...)
	if !ok {
		return nil, false
	}
	j := &Journey{Enabled: true, File: n.File()}
	valid := true
	if f, ok := fields["id"]; ok {
		id, ok := f.String()
		j.ID = id
		switch {
		case !ok:
			valid = false
		case !definition.IDPattern.MatchString(id):
			f.Errorf("invalid id %q: use 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", id)
			valid = false
		}
	} else {
		n.Missing("id")
		valid = false
	}
	for _, field := range []struct {
		key string
		dst *string
	}{{"name", &j.Name}, {"description", &j.Description}} {
		if f, ok := fields[field.key]; ok {
			s, ok := f.String()
			valid = valid && ok
			*field.dst = s
		}
	}
	if f, ok := fields["enabled"]; ok {
		b, ok := f.Bool()
		valid = valid && ok
		j.Enabled = b
	}
	if f, ok := fields["trigger"]; ok {
		r, ok := decodeRule(f)
		valid = valid && ok
		j.Trigger = r
	} else {
		n.Missing("trigger")
		valid = false
	}
	if f, ok := fields["exitOn"]; ok {
		items, ok := f.List()
		valid = valid && ok
		for _, item := range items {
			r, ok := decodeRule(item)
			valid = valid && ok
			j.ExitOn = append(j.ExitOn, r)
		}
	}
	valid = decodeReaction(n, j, fields) && valid
	return j, valid
}

func decodeRule(n *definition.Node) (Rule, bool) {
	fields, ok := n.Fields("event", "where")
	if !ok {
		return Rule{}, false
	}
	var r Rule
	valid := true
	if f, ok := fields["event"]; ok {
		s, ok := f.String()
		r.Event = s
		if ok && s == "" {
			f.Errorf("must not be empty")
			ok = false
		}
		valid = valid && ok
	} else {
		n.Missing("event")
		valid = false
	}
	if f, ok := fields["where"]; ok {
		items, ok := f.List()
		valid = valid && ok
		for _, item := range items {
			c, ok := buckets.DecodePropertyCondition(item)
			valid = valid && ok
			r.Where = append(r.Where, c)
		}
	}
	return r, valid
}

// Enabled returns the journeys that are statically enabled and selected,
// and a warning for every selected id that matches no loaded journey.
func Enabled(all []*Journey, sel definition.Selection) (enabled []*Journey, warnings []string) {
	return definition.Pick(sel, "ENABLED_JOURNEYS", "journey", all, func(j *Journey) (string, bool) { return j.ID, j.Enabled })
}

// Registry is the immutable set of enabled journeys, built once at boot.
type Registry struct {
	journeys  []*Journey
	byTrigger map[string][]*Journey
	byExit    map[string][]*Journey
}

// NewRegistry indexes the journeys by trigger event and exit event.
func NewRegistry(js []*Journey) *Registry {
	r := &Registry{journeys: slices.Clone(js), byTrigger: map[string][]*Journey{}, byExit: map[string][]*Journey{}}
	for _, j := range js {
		r.byTrigger[j.Trigger.Event] = append(r.byTrigger[j.Trigger.Event], j)
		seen := map[string]bool{}
		for _, rule := range j.ExitOn {
			if !seen[rule.Event] {
				seen[rule.Event] = true
				r.byExit[rule.Event] = append(r.byExit[rule.Event], j)
			}
		}
	}
	return r
}

// All returns every journey in definition order.
func (r *Registry) All() []*Journey { return slices.Clone(r.journeys) }

// TriggeredBy returns the journeys whose trigger event is the event.
func (r *Registry) TriggeredBy(event string) []*Journey { return slices.Clone(r.byTrigger[event]) }

// Binds reports whether any journey is triggered by the event; a generic
// bucket:entered / bucket:left event is emitted only then.
func (r *Registry) Binds(event string) bool { return len(r.byTrigger[event]) > 0 }

// ExitingOn returns the ids of the journeys with an exit rule that the event
// with these properties satisfies, in definition order.
func (r *Registry) ExitingOn(event string, properties map[string]any) []string {
	var ids []string
	for _, j := range r.byExit[event] {
		for _, rule := range j.ExitOn {
			if rule.Matches(event, properties) {
				ids = append(ids, j.ID)
				break
			}
		}
	}
	return ids
}

// Feeding returns the ids of the journeys that a bucket's events trigger or
// end: those triggered by, or exiting on, its entered or left event or one
// of its dwell events.
func (r *Registry) Feeding(b *buckets.Bucket) []string {
	var ids []string
	for _, j := range r.journeys {
		events := []string{j.Trigger.Event}
		for _, rule := range j.ExitOn {
			events = append(events, rule.Event)
		}
		for _, e := range events {
			if e == b.EnteredEvent() || e == b.LeftEvent() || strings.HasPrefix(e, DwellEvent(b.ID, "")) {
				ids = append(ids, j.ID)
				break
			}
		}
	}
	return ids
}
