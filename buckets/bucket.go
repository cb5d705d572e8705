package buckets

import (
	"fmt"
	"io/fs"

	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// EntryLimit says which joins of a user emit bucket:entered.
type EntryLimit string

// The entry limits of contract §2.1.
const (
	EntryUnlimited     EntryLimit = "unlimited"
	EntryOnce          EntryLimit = "once"
	EntryOncePerPeriod EntryLimit = "once_per_period"
)

// AbsenceShape names the criteria shapes whose joins only the clock can
// cause, for which reconcileJoins is inferred (contract §6.3).
type AbsenceShape int

const (
	// NoAbsenceShape is every other shape.
	NoAbsenceShape AbsenceShape = iota
	// SingleAbsence is {event X, not_exists, within W}.
	SingleAbsence
	// LapsedActive is and[{event X, exists}, {event X, not_exists, within W}].
	LapsedActive
)

// Bucket is one validated bucket definition with its inferred shape. A
// Bucket reached through a Registry is shared and must not be modified.
type Bucket struct {
	ID                 string
	Name               string
	Description        string
	Enabled            bool // the static switch of the definition
	Criteria           Condition
	EntryLimit         EntryLimit
	EntryPeriod        Duration
	MinDwell           Duration
	MaxDwell           Duration
	TimeBased          bool // explicit, or inferred from a windowed event leg or a relative date
	ReconcileEvery     Duration
	ReconcileJoins     bool // explicit, or inferred for the absence and relative-date shapes
	FastExpiry         bool
	SyncToPostHog      bool
	PostHogPropertyKey string

	// CriteriaHash is the hash of contract §8, computed at load.
	CriteriaHash string
	// File is the definition file the bucket was read from.
	File string
	// Absence is the absence shape of the criteria, if any; AbsenceEvent and
	// AbsenceWindow are its event and window.
	Absence       AbsenceShape
	AbsenceEvent  string
	AbsenceWindow Duration
	// ExpiryWindow is the window W of expires_at = now + W (contract §5.4):
	// the first positive windowed leg's, else the first windowed leg's.
	ExpiryWindow Duration
	// ArmsExpiry is true when joins arm a bucket-expiry timer: fastExpiry
	// with a positive windowed leg.
	ArmsExpiry bool
	// DateJoins is true for criteria of relative dates and plain property
	// legs only (contract §3.6): their sweep joins need no event.
	DateJoins bool
	// DateExpiry are the legs whose end in time sets a join's expires_at,
	// for relative-date criteria without event windows (contract §3.6).
	DateExpiry []*PropertyCondition
	// EventNames and PropertyNames are every event and property the
	// criteria reference, in order of first appearance.
	EventNames    []string
	PropertyNames []string
}

// EnteredEvent is the name of the join event, bucket:entered:<id>.
func (b *Bucket) EnteredEvent() string { return "bucket:entered:" + b.ID }

// LeftEvent is the name of the leave event, bucket:left:<id>.
func (b *Bucket) LeftEvent() string { return "bucket:left:" + b.ID }

var bucketKeys = []string{
	"id", "name", "description", "enabled", "kind", "criteria", "entryLimit", "reentry",
	"entryPeriod", "reentryPeriod", "minDwell", "maxDwell", "timeBased", "reconcileEvery",
	"reconcileJoins", "fastExpiry", "syncToPostHog", "postHogPropertyKey",
}

// Load reads every bucket definition in the folder "buckets" of fsys and
// validates it, and the references between buckets (link). The report
// holds every error and warning of every file; the buckets returned are
// the valid ones, in dependency order: each after the buckets it
// references, in file order otherwise.
func Load(fsys fs.FS) ([]*Bucket, *definition.Report) {
	report := &definition.Report{}
	var loaded []*Bucket
	seen := map[string]string{} // id → file
	for _, n := range definition.ReadDir(fsys, "buckets", report) {
		mark := len(report.Errors)
		b, ok := decodeBucket(n)
		if !ok || len(report.Errors) > mark { // an unknown key, say, still rejects the bucket
			continue
		}
		if first, dup := seen[b.ID]; dup {
			n.At("id").Errorf("duplicate bucket id %q (first defined in %s)", b.ID, first)
			continue
		}
		seen[b.ID] = n.File()
		loaded = append(loaded, b)
	}
	return link(loaded, report), report
}

func decodeBucket(n *definition.Node) (*Bucket, bool) {
	fields, ok := n.Fields(bucketKeys...)
	if !ok {
		return nil, false
	}
	b := &Bucket{File: n.File(), Enabled: true, EntryLimit: EntryUnlimited}
	valid := true
	str := func(key string, dst *string, required bool) {
		f, present := fields[key]
		if !present {
			if required {
				n.Missing(key)
				valid = false
			}
			return
		}
		s, ok := f.String()
		valid = valid && ok
		*dst = s
	}
	boolean := func(key string, dst *bool) bool {
		f, present := fields[key]
		if !present {
			return false
		}
		v, ok := f.Bool()
		valid = valid && ok
		*dst = v
		return ok
	}
	duration := func(key string, dst *Duration) {
		if f, present := fields[key]; present {
			d, ok := DecodeDuration(f)
			valid = valid && ok
			*dst = d
		}
	}

	str("id", &b.ID, true)
	if b.ID != "" && !definition.IDPattern.MatchString(b.ID) {
		fields["id"].Errorf("invalid id %q: use 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit", b.ID)
		valid = false
	}
	str("name", &b.Name, true)
	if f, ok := fields["name"]; ok && b.Name == "" && valid {
		f.Errorf("must not be empty")
		valid = false
	}
	str("description", &b.Description, false)
	boolean("enabled", &b.Enabled)

	kind := "dynamic"
	str("kind", &kind, false)
	switch kind {
	case "dynamic":
	case "manual":
		fields["kind"].Errorf(`kind:"manual" buckets are not implemented; use a dynamic bucket with criteria`)
		valid = false
	default:
		fields["kind"].Errorf(`unknown kind %q: use "dynamic"`, kind)
		valid = false
	}

	if f, present := fields["criteria"]; present {
		c, ok := decodeCriteria(f)
		valid = valid && ok
		if ok {
			b.Criteria = c
			if p, isUnbounded := unbounded(c, f.Path()); isUnbounded {
				f.Errorf("criteria must be bounded: %s can match users with no data", p)
				valid = false
			}
		}
	} else if kind != "manual" {
		n.Missing("criteria")
		valid = false
	}

	limitKey, ok := aliasedKey(fields, "entryLimit", "reentry")
	valid = valid && ok
	if f, present := fields[limitKey]; present {
		s, ok := f.String()
		b.EntryLimit = EntryLimit(s)
		switch {
		case !ok:
			valid = false
		case b.EntryLimit != EntryOnce && b.EntryLimit != EntryOncePerPeriod && b.EntryLimit != EntryUnlimited:
			f.Errorf(`unknown entry limit %q: use "once", "once_per_period" or "unlimited"`, s)
			valid = false
		}
	}
	periodKey, ok := aliasedKey(fields, "entryPeriod", "reentryPeriod")
	valid = valid && ok
	duration(periodKey, &b.EntryPeriod)
	if !b.EntryPeriod.IsZero() && b.EntryLimit != EntryOncePerPeriod {
		fields[periodKey].Warnf(`has no effect unless the entry limit is "once_per_period"`)
	}

	duration("minDwell", &b.MinDwell)
	duration("maxDwell", &b.MaxDwell)
	if !b.MinDwell.IsZero() && !b.MaxDwell.IsZero() && b.MaxDwell.Std() < b.MinDwell.Std() {
		fields["maxDwell"].Errorf("maxDwell (%s) must not be shorter than minDwell (%s)", b.MaxDwell, b.MinDwell)
		valid = false
	}
	explicitTimeBased := boolean("timeBased", &b.TimeBased)
	duration("reconcileEvery", &b.ReconcileEvery)
	explicitJoins := boolean("reconcileJoins", &b.ReconcileJoins)
	boolean("fastExpiry", &b.FastExpiry)
	boolean("syncToPostHog", &b.SyncToPostHog)
	str("postHogPropertyKey", &b.PostHogPropertyKey, false)
	if b.PostHogPropertyKey == "" {
		b.PostHogPropertyKey = "hogsend_bucket_" + b.ID
	}

	if !valid {
		return nil, false
	}

	b.analyse(explicitTimeBased, explicitJoins)
	if b.FastExpiry {
		switch {
		case !b.hasWindow():
			fields["fastExpiry"].Errorf("fastExpiry needs an event leg with within: without a window no timer can ever be armed")
			return nil, false
		case !b.ArmsExpiry:
			fields["fastExpiry"].Warnf("every windowed leg is an absence (not_exists) leg, so a timer could never make anyone leave; joins arm nothing")
		}
	}
	return b, true
}

// aliasedKey returns which of a key and its older alias the definition
// uses; giving both is an error (ok false).
func aliasedKey(fields map[string]*definition.Node, key, alias string) (used string, ok bool) {
	if _, hasAlias := fields[alias]; !hasAlias {
		return key, true
	}
	if _, hasKey := fields[key]; hasKey {
		fields[alias].Errorf("give %s or its older name %s, not both", key, alias)
		return alias, false
	}
	return alias, true
}

// analyse infers the shape facts of the criteria.
func (b *Bucket) analyse(explicitTimeBased, explicitJoins bool) {
	b.CriteriaHash = CriteriaHash(b.Criteria)
	var firstWindow, firstPositiveWindow Duration
	relativeDates := false
	events, props := map[string]bool{}, map[string]bool{}
	Walk(b.Criteria, func(_ string, c Condition) {
		switch c := c.(type) {
		case *EventCondition:
			if !events[c.EventName] {
				events[c.EventName] = true
				b.EventNames = append(b.EventNames, c.EventName)
			}
			if c.Within.IsZero() {
				return
			}
			if firstWindow.IsZero() {
				firstWindow = c.Within
			}
			if c.Check != CheckNotExists && firstPositiveWindow.IsZero() {
				firstPositiveWindow = c.Within
			}
		case *PropertyCondition:
			relativeDates = relativeDates || c.Operator.IsRelativeDate()
			if !props[c.Property] {
				props[c.Property] = true
				b.PropertyNames = append(b.PropertyNames, c.Property)
			}
		}
	})
	inferredTimeBased := !firstWindow.IsZero()
	// Like Hogsend, an explicit timeBased:false does not switch off a window.
	b.TimeBased = (explicitTimeBased && b.TimeBased) || inferredTimeBased

	b.ExpiryWindow = firstPositiveWindow
	if b.ExpiryWindow.IsZero() {
		b.ExpiryWindow = firstWindow
	}
	b.ArmsExpiry = b.FastExpiry && !firstPositiveWindow.IsZero()

	b.Absence, b.AbsenceEvent, b.AbsenceWindow = absenceShape(b.Criteria)
	b.DateJoins = dateShape(b.Criteria)
	if relativeDates {
		b.TimeBased = true // the clock alone moves users in and out
		if firstWindow.IsZero() {
			b.DateExpiry = dateExpiryLegs(b.Criteria)
		}
	}
	if !explicitJoins {
		b.ReconcileJoins = b.Absence != NoAbsenceShape || b.DateJoins
	}
}

// dateShape recognises the criteria whose sweep joins need no event
// (contract §3.6): a single relative-date leg, or an and of relative-date
// and plain property legs with at least one relative date.
func dateShape(c Condition) bool {
	if p, ok := c.(*PropertyCondition); ok {
		return p.Operator.IsRelativeDate()
	}
	comp, ok := c.(*Composite)
	if !ok || comp.Operator != And {
		return false
	}
	relative := false
	for _, child := range comp.Conditions {
		p, ok := child.(*PropertyCondition)
		if !ok {
			return false
		}
		relative = relative || p.Operator.IsRelativeDate()
	}
	return relative
}

// dateExpiryLegs are the within_next and within_last legs that must hold
// for the criteria to hold — the root, or a child of a root and — whose
// end sets a join's expires_at (contract §3.6).
func dateExpiryLegs(c Condition) []*PropertyCondition {
	legs := []Condition{c}
	if comp, ok := c.(*Composite); ok && comp.Operator == And {
		legs = comp.Conditions
	}
	var out []*PropertyCondition
	for _, leg := range legs {
		if p, ok := leg.(*PropertyCondition); ok && (p.Operator == PropWithinNext || p.Operator == PropWithinLast) {
			out = append(out, p)
		}
	}
	return out
}

// SingleLeg reports whether the criteria are one leg that the set-based
// sweep leaves handle (contract §6.2): an event leg, with or without where
// or an aggregate, or a relative-date leg.
func (b *Bucket) SingleLeg() bool {
	switch c := b.Criteria.(type) {
	case *EventCondition:
		return true
	case *PropertyCondition:
		return c.Operator.IsRelativeDate()
	}
	return false
}

// QuietLeg returns the criteria's leg when they are a single windowed
// not_exists leg — "did not do X in W" — and nil otherwise: the one shape
// whose criteria say when a membership began, W after the user's last X
// (contract §14).
func (b *Bucket) QuietLeg() *EventCondition {
	if e, ok := b.Criteria.(*EventCondition); ok && e.Check == CheckNotExists && !e.Within.IsZero() {
		return e
	}
	return nil
}

func (b *Bucket) hasWindow() bool {
	found := false
	Walk(b.Criteria, func(_ string, c Condition) {
		if e, ok := c.(*EventCondition); ok && !e.Within.IsZero() {
			found = true
		}
	})
	return found
}

// absenceShape recognises the two exact absence shapes of contract §6.3.
func absenceShape(c Condition) (AbsenceShape, string, Duration) {
	isAbsence := func(c Condition) (*EventCondition, bool) {
		e, ok := c.(*EventCondition)
		return e, ok && e.Check == CheckNotExists && !e.Within.IsZero()
	}
	if e, ok := isAbsence(c); ok {
		return SingleAbsence, e.EventName, e.Within
	}
	comp, ok := c.(*Composite)
	if !ok || comp.Operator != And || len(comp.Conditions) != 2 {
		return NoAbsenceShape, "", Duration{}
	}
	ever, ok := comp.Conditions[0].(*EventCondition)
	if !ok || ever.Check != CheckExists || !ever.Within.IsZero() {
		return NoAbsenceShape, "", Duration{}
	}
	if e, ok := isAbsence(comp.Conditions[1]); ok && e.EventName == ever.EventName {
		return LapsedActive, e.EventName, e.Within
	}
	return NoAbsenceShape, "", Duration{}
}

// String describes the bucket for logs.
func (b *Bucket) String() string {
	return fmt.Sprintf("bucket %q (%s)", b.ID, String(b.Criteria))
}
