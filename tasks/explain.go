package tasks

import (
	"context"
	"fmt"
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
	Type      string `json:"type"` // "property" or "event"
	Condition string `json:"condition"`
	// Observed is {present, value, jsonType} for a property leg and
	// {count, cutoff, newest} for an event leg (cutoff null without a
	// window; newest the latest such event, in the window or not).
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
	u, erased, err := liveSubject(ctx, d.DB, userID, "")
	if err != nil {
		return ex, err
	}
	ex.Erased = erased
	x := explainer{ctx: ctx, d: d, now: now, facts: db.UserFacts{IDB: d.DB, UserID: userID, Properties: u.Properties}, ex: &ex}
	if ex.Verdict, err = x.node("criteria", b.Criteria); err != nil {
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
			ExpiresAt: m.ExpiresAt, MaxDwellAt: m.MaxDwellAt}
		if heldByMinDwell(b, m.EnteredAt, now) {
			ex.Membership.MinDwellUntil = ptr(m.EnteredAt.Add(b.MinDwell.Std()))
		}
	}
	return ex, x.next(b)
}

type explainer struct {
	ctx   context.Context
	d     *Deps
	now   time.Time
	facts db.UserFacts
	ex    *Explanation
}

// node evaluates a condition without short-circuiting, so that every leaf
// is shown, and records leaves and branches.
func (x *explainer) node(path string, c buckets.Condition) (bool, error) {
	switch c := c.(type) {
	case *buckets.PropertyCondition:
		v, present := x.facts.Property(c.Property)
		result := c.Holds(v, present)
		x.ex.Leaves = append(x.ex.Leaves, LeafVerdict{Path: path, Type: "property", Condition: buckets.String(c),
			Observed: map[string]any{"present": present, "value": v, "jsonType": jsonType(v, present)}, Result: result})
		return result, nil
	case *buckets.EventCondition:
		cutoff := c.Cutoff(x.now)
		n, err := x.facts.CountEvents(x.ctx, c.EventName, cutoff)
		if err != nil {
			return false, err
		}
		newest, err := db.LatestUserEvent(x.ctx, x.d.DB, x.facts.UserID, c.EventName)
		if err != nil {
			return false, err
		}
		observed := map[string]any{"count": n, "cutoff": nil, "newest": newest}
		if !cutoff.IsZero() {
			observed["cutoff"] = cutoff
		}
		result := c.HoldsForCount(n)
		x.ex.Leaves = append(x.ex.Leaves, LeafVerdict{Path: path, Type: "event", Condition: buckets.String(c),
			Observed: observed, Result: result})
		return result, nil
	case *buckets.Composite:
		results := make([]bool, len(c.Conditions))
		paths := make([]string, len(c.Conditions))
		for i, child := range c.Conditions {
			paths[i] = fmt.Sprintf("%s.conditions[%d]", path, i)
			r, err := x.node(paths[i], child)
			if err != nil {
				return false, err
			}
			results[i] = r
		}
		// and: false when any child is false (those decide); or: true when
		// any child is true (those decide). Otherwise every child decided.
		decisive := c.Operator == buckets.Or
		result := !decisive
		var decidedBy []string
		for i, r := range results {
			if r == decisive {
				result = decisive
				decidedBy = append(decidedBy, paths[i])
			}
		}
		if decidedBy == nil {
			decidedBy = paths
		}
		x.ex.Branches = append(x.ex.Branches, BranchVerdict{Path: path, Operator: string(c.Operator), Result: result, DecidedBy: decidedBy})
		return result, nil
	}
	return false, fmt.Errorf("explaining %T: unknown condition", c)
}

// next predicts the next sweep (contract §6.2 and §6.3).
func (x *explainer) next(b *buckets.Bucket) error {
	ex, now := x.ex, x.now
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
		closed, err := joinPassClosed(x.ctx, x.d, b)
		if err != nil {
			return err
		}
		fired := false
		for _, name := range b.EventNames {
			at, err := db.LatestUserEvent(x.ctx, x.d.DB, ex.UserID, name)
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
