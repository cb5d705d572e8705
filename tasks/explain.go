package tasks

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/db"
)

// Explanation answers "why is this user (not) in this bucket?": the
// verdict now, what each leaf of the criteria observed, which branches
// decided, the membership, and what the next sweep would do.
type Explanation struct {
	BucketID string    `json:"bucketId"`
	UserID   string    `json:"userId"`
	At       time.Time `json:"at"`
	Member   bool      `json:"member"`
	Verdict  bool      `json:"verdict"`
	// Erased is true for a user whose only contacts are soft-deleted: no
	// path touches them.
	Erased         bool            `json:"erased"`
	Leaves         []LeafVerdict   `json:"leaves"`
	Branches       []BranchVerdict `json:"branches"`
	Membership     *MembershipView `json:"membership"`
	RuntimeEnabled bool            `json:"runtimeEnabled"`
	// Next is what the next sweep does: stay, leave, join or none; NextAt
	// when it is not due yet, and NextReason why.
	Next       string     `json:"next"`
	NextAt     *time.Time `json:"nextAt,omitempty"`
	NextReason string     `json:"nextReason,omitempty"`
}

// LeafVerdict is one leaf of the criteria with what it observed.
type LeafVerdict struct {
	Path      string `json:"path"`
	Type      string `json:"type"` // "property", "event" or "bucket"
	Condition string `json:"condition"`
	// Observed is {present, value, jsonType} for a property leg, with
	// {time, from, to} for a relative date (the value read as a time, null
	// when it is none, and the window's bounds now, null when open), and
	// {count, cutoff, newest} for an event leg (cutoff null without a
	// window; newest the latest such event, in the window or not), with
	// inWindow for a leg with a where (count is how many of those passed
	// it) and {aggregate, fed} for sum, avg, min and max (the value
	// compared, null when there was none, and how many events fed it).
	Observed map[string]any `json:"observed"`
	Result   bool           `json:"result"`
}

// BranchVerdict is one and/or node: its result and the children that
// decided it.
type BranchVerdict struct {
	Path      string   `json:"path"`
	Operator  string   `json:"operator"`
	Result    bool     `json:"result"`
	DecidedBy []string `json:"decidedBy"`
}

// MembershipView is the active membership row as explain shows it.
type MembershipView struct {
	ID         string     `json:"id"`
	EnteredAt  time.Time  `json:"enteredAt"`
	EntryCount int        `json:"entryCount"`
	Source     string     `json:"source"`
	ExpiresAt  *time.Time `json:"expiresAt"`
	MaxDwellAt *time.Time `json:"maxDwellAt"`
	// MinDwellUntil is when minDwell lets the member leave, while it holds
	// the member in.
	MinDwellUntil *time.Time `json:"minDwellUntil,omitempty"`
	// DwellClock is when the membership's dwell schedules count from, and
	// Dwell where each of the bucket's schedules stands (contract §14).
	DwellClock time.Time   `json:"dwellClock"`
	Dwell      []DwellView `json:"dwell,omitempty"`
}

// DwellView is one dwell schedule of the bucket as it stands for a
// membership: when the membership last fired it, and when the sweep
// fires it next (nil for an after that has fired).
type DwellView struct {
	Label       string     `json:"label"`
	Schedule    string     `json:"schedule"` // "after 7d", "every 1d"
	Journeys    []string   `json:"journeys"`
	LastFiredAt *time.Time `json:"lastFiredAt"`
	NextAt      *time.Time `json:"nextAt"`
}

// dwellViews are where the bucket's dwell schedules stand for the
// membership m: the instants the sweep's due test (db.DwellPass) turns on.
func dwellViews(d *Deps, b *buckets.Bucket, m db.Membership) []DwellView {
	var out []DwellView
	clock, stamps := m.DwellClock(), m.DwellStamps()
	for _, r := range d.Journeys.DwellReactions(b.ID) {
		v := DwellView{Label: r.Label, Schedule: r.String(), Journeys: r.Journeys}
		last, fired := stamps[r.Label]
		if fired {
			v.LastFiredAt = &last
		}
		switch {
		case r.Repeats() && fired && last.After(clock):
			v.NextAt = ptr(last.Add(r.Every))
		case r.Repeats():
			v.NextAt = ptr(clock.Add(r.Every))
		case !fired:
			v.NextAt = ptr(clock.Add(r.After))
		}
		out = append(out, v)
	}
	return out
}

// Explain explains the user's membership of the bucket now. It reads, and
// changes nothing.
func Explain(ctx context.Context, d *Deps, userID, bucketID string) (Explanation, error) {
	b, ok := d.Buckets.Get(bucketID)
	if !ok {
		return Explanation{}, fmt.Errorf("%w: no enabled bucket %q", ErrInvalidInput, bucketID)
	}
	now := d.Now()
	ex := Explanation{BucketID: b.ID, UserID: userID, At: now, Leaves: []LeafVerdict{}, Branches: []BranchVerdict{}}
	var err error
	if ex.RuntimeEnabled, err = d.Switch.Enabled(ctx, b.ID); err != nil {
		return ex, err
	}
	c, err := db.ContactByUser(ctx, d.DB, userID)
	if err != nil {
		return ex, err
	}
	props := buckets.Properties{}
	switch {
	case c != nil && c.DeletedAt != nil:
		ex.Erased = true
	case c != nil:
		props = c.PropertyMap()
	}
	if err := explainCriteria(ctx, d, b, props, now, &ex); err != nil {
		return ex, err
	}
	rows, err := db.ListMemberships(ctx, d.DB, db.MembershipFilter{UserID: userID, BucketID: b.ID, Status: db.StatusActive})
	if err != nil {
		return ex, err
	}
	if len(rows) > 0 {
		m := rows[0]
		ex.Member = true
		ex.Membership = &MembershipView{ID: m.ID, EnteredAt: m.EnteredAt, EntryCount: m.EntryCount, Source: deref(m.Source),
			ExpiresAt: m.ExpiresAt, MaxDwellAt: m.MaxDwellAt, DwellClock: m.DwellClock(), Dwell: dwellViews(d, b, m)}
		if heldByMinDwell(b, m.EnteredAt, now) {
			ex.Membership.MinDwellUntil = ptr(m.EnteredAt.Add(b.MinDwell.Std()))
		}
	}
	return ex, explainNext(ctx, d, b, now, &ex)
}

// explainCriteria evaluates the criteria, with the contact's properties,
// by buckets.Explain — the Go evaluator the conformance suite holds the
// compiled SQL of every path to — and records its trace: each leaf's
// observed value (and, for an event leg, the user's latest such event) and
// each branch.
func explainCriteria(ctx context.Context, d *Deps, b *buckets.Bucket, props buckets.Properties, now time.Time, ex *Explanation) error {
	verdict, trace, err := buckets.Explain(ctx, b.Criteria, now, db.UserFacts{IDB: d.DB, UserID: ex.UserID, Properties: props})
	if err != nil {
		return err
	}
	ex.Verdict = verdict
	for _, l := range trace.Leaves {
		leaf := LeafVerdict{Path: l.Path, Condition: buckets.String(l.Condition), Result: l.Result}
		switch c := l.Condition.(type) {
		case *buckets.PropertyCondition:
			leaf.Type = "property"
			leaf.Observed = map[string]any{"present": l.Present, "value": jsonValue(l.Value), "jsonType": jsonType(l.Value, l.Present)}
			propertyReadings[c.Operator](leaf.Observed, c, l, now)
		case *buckets.EventCondition:
			newest, err := db.LatestUserEvent(ctx, d.DB, ex.UserID, c.EventName)
			if err != nil {
				return err
			}
			leaf.Type = "event"
			leaf.Observed = map[string]any{"count": l.Tally.Count, "cutoff": timeOrNil(l.Cutoff), "newest": newest}
			if len(c.Where) > 0 {
				leaf.Observed["inWindow"] = l.Tally.InWindow
			}
			eventReadings[c.Check](leaf.Observed, c, l)
		case *buckets.BucketCondition:
			leaf.Type = "bucket"
			leaf.Observed = map[string]any{"member": l.Membership.Member}
			bucketReadings[c.Check](leaf.Observed, c, l)
		}
		ex.Leaves = append(ex.Leaves, leaf)
	}
	for _, br := range trace.Branches {
		ex.Branches = append(ex.Branches, BranchVerdict{Path: br.Path, Operator: string(br.Operator), Result: br.Result, DecidedBy: br.DecidedBy})
	}
	return nil
}

// propertyReadings is the explain layer of the property operators (see
// the checklist in buckets/operators.go): what a leg observed beyond its
// value, present and jsonType.
var propertyReadings = map[buckets.PropertyOperator]func(observed map[string]any, c *buckets.PropertyCondition, l buckets.LeafTrace, now time.Time){
	buckets.PropEq:         noReading,
	buckets.PropNeq:        noReading,
	buckets.PropGt:         noReading,
	buckets.PropGte:        noReading,
	buckets.PropLt:         noReading,
	buckets.PropLte:        noReading,
	buckets.PropContains:   noReading,
	buckets.PropExists:     noReading,
	buckets.PropNotExists:  noReading,
	buckets.PropWithinLast: dateReading,
	buckets.PropBeforeLast: dateReading,
	buckets.PropWithinNext: dateReading,
	buckets.PropAfterNext:  dateReading,
}

// noReading adds nothing to what every leg of its kind shows.
func noReading(map[string]any, *buckets.PropertyCondition, buckets.LeafTrace, time.Time) {}

// dateReading shows a relative date's value read as a time (null when it
// is none) and the window's bounds now (null when open).
func dateReading(observed map[string]any, c *buckets.PropertyCondition, l buckets.LeafTrace, now time.Time) {
	from, to := c.DateWindow(now)
	observed["time"], observed["from"], observed["to"] = nil, timeOrNil(from), timeOrNil(to)
	if t, ok := buckets.ParseTime(l.Value); ok {
		observed["time"] = t
	}
}

// eventReadings is the explain layer of the event checks (see the
// checklist in buckets/operators.go): what a leg observed beyond its
// count, cutoff and newest event.
var eventReadings = map[buckets.EventCheck]func(observed map[string]any, c *buckets.EventCondition, l buckets.LeafTrace){
	buckets.CheckExists:    countReading,
	buckets.CheckNotExists: countReading,
	buckets.CheckCount:     countReading,
	buckets.CheckSum:       aggregateReading,
	buckets.CheckAvg:       aggregateReading,
	buckets.CheckMin:       aggregateReading,
	buckets.CheckMax:       aggregateReading,
}

// countReading adds nothing: the count is what the leg read.
func countReading(map[string]any, *buckets.EventCondition, buckets.LeafTrace) {}

// aggregateReading shows the value an aggregate compared (null when there
// was none) and how many events fed it.
func aggregateReading(observed map[string]any, c *buckets.EventCondition, l buckets.LeafTrace) {
	observed["aggregate"], observed["fed"] = nil, l.Tally.Fed
	if v, ok := l.Tally.Aggregate(c.Check); ok && !math.IsNaN(v) {
		observed["aggregate"] = jsonValue(v)
	}
}

// jsonValue is v as JSON can carry it. A number beyond the double range
// reads as ±Infinity (contract §3.1), which JSON has no word for: it is
// written as the string "Infinity" or "-Infinity", as JavaScript and
// Postgres print it, while jsonType still says "number". Objects and
// lists are written the same way, all the way down.
func jsonValue(v any) any {
	switch v := v.(type) {
	case float64:
		switch {
		case math.IsInf(v, 1):
			return "Infinity"
		case math.IsInf(v, -1):
			return "-Infinity"
		}
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = jsonValue(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = jsonValue(x)
		}
		return out
	}
	return v
}

// bucketReadings is the explain layer of the bucket checks (see the
// checklist in buckets/operators.go): the observed membership row, its id
// and when it began, or none (contract §13).
var bucketReadings = map[buckets.BucketCheck]func(observed map[string]any, c *buckets.BucketCondition, l buckets.LeafTrace){
	buckets.CheckMember:    membershipReading,
	buckets.CheckNotMember: membershipReading,
}

func membershipReading(observed map[string]any, _ *buckets.BucketCondition, l buckets.LeafTrace) {
	observed["rowId"], observed["enteredAt"] = nil, nil
	if l.Membership.Member {
		observed["rowId"], observed["enteredAt"] = l.Membership.RowID, l.Membership.EnteredAt
	}
}

// explainNext predicts the next sweep (contract §6.2 and §6.3).
func explainNext(ctx context.Context, d *Deps, b *buckets.Bucket, now time.Time, ex *Explanation) error {
	set := func(next, reason string, at *time.Time) { ex.Next, ex.NextReason, ex.NextAt = next, reason, at }
	switch {
	case ex.Erased:
		set("none", "the user is erased", nil)
	case !ex.RuntimeEnabled:
		set("none", "the bucket is switched off at runtime", nil)
	case ex.Member && ex.Membership.MaxDwellAt != nil && !ex.Membership.MaxDwellAt.After(now):
		set("leave", "maxDwell reached", nil)
	case ex.Member && ex.Verdict:
		set("stay", "the criteria hold", nil)
	case ex.Member && ex.Membership.MinDwellUntil != nil:
		set("leave", "the criteria no longer hold; minDwell holds the member until nextAt", ex.Membership.MinDwellUntil)
	case ex.Member && b.TimeBased:
		set("leave", "the criteria no longer hold", nil)
	case ex.Member && !b.MinDwell.IsZero() && ex.Membership.ExpiresAt != nil:
		set("leave", "a deferred leave is due at nextAt", ex.Membership.ExpiresAt)
	case ex.Member:
		set("stay", "the criteria no longer hold, but the bucket is not time-based: the next event for the user decides", nil)
	case !ex.Verdict:
		set("none", "the criteria do not hold", nil)
	case !b.TimeBased || !b.ReconcileJoins:
		set("none", "the sweep does not join this bucket; the next event for the user does", nil)
	default:
		closed, err := joinPassClosed(ctx, d, b)
		if err != nil {
			return err
		}
		fired := b.DateJoins // relative dates have no everFired floor
		for _, name := range b.EventNames {
			at, err := db.LatestUserEvent(ctx, d.DB, ex.UserID, name)
			if err != nil {
				return err
			}
			fired = fired || at != nil
		}
		switch {
		case closed != "":
			set("none", "the join pass is closed: "+closed, nil)
		case !fired:
			set("none", "the user never fired "+fmt.Sprint(b.EventNames)+" (the everFired floor)", nil)
		default:
			set("join", "the criteria hold", nil)
		}
	}
	return nil
}

// timeOrNil is t, or nil for the zero time (an open bound, no window).
func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func jsonType(v any, present bool) string {
	switch v.(type) {
	case nil:
		if present {
			return "null"
		}
		return "absent"
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64, int, int64, float32:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
