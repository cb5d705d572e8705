package journeys

import (
	"fmt"
	"strconv"
	"time"

	"github.com/bucketworker/bucket-worker/buckets"
	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// The reaction kinds of a Hogsend ≥ 0.6 reaction journey (contract §2.3):
// bucket.on("enter" | "leave" | "dwell", …).
const (
	ReactionEnter = "enter"
	ReactionLeave = "leave"
	ReactionDwell = "dwell"
)

// DwellSchedule is when a dwell reaction fires, counted on a membership's
// dwell clock (contract §14): once, After the clock, or each time Every
// has passed. Exactly one of the two is set, a whole number of seconds.
type DwellSchedule struct {
	// Label names the schedule in its event, its idempotency key and the
	// membership's dwell_state: after-<ms> or every-<ms>.
	Label string
	After time.Duration
	Every time.Duration
}

// Offset is the schedule's duration: After or Every.
func (s DwellSchedule) Offset() time.Duration { return max(s.After, s.Every) }

// Repeats reports whether the schedule fires every Every rather than once.
func (s DwellSchedule) Repeats() bool { return s.Every > 0 }

// String writes the schedule for people: "after 7d", "every 1d".
func (s DwellSchedule) String() string {
	kind := "after"
	if s.Repeats() {
		kind = "every"
	}
	return kind + " " + humanDuration(s.Offset())
}

// DwellEvent is the event a dwell fire of the schedule emits for the
// bucket: bucket:dwell:<bucketId>:<label>.
func DwellEvent(bucketID, label string) string {
	return "bucket:dwell:" + bucketID + ":" + label
}

// dwellLabel is the label Hogsend derives for a schedule: after-<ms> or
// every-<ms>.
func dwellLabel(kind string, d time.Duration) string {
	return kind + "-" + strconv.FormatInt(d.Milliseconds(), 10)
}

func humanDuration(d time.Duration) string {
	b, err := buckets.NewDuration(0, 0, 0, int64(d/time.Second))
	if err != nil {
		return d.String()
	}
	return b.String()
}

// decodeReaction reads the reaction keys of a journey: reactionKind,
// sourceBucketId and dwellSchedule. Only a dwell reaction keeps them; the
// enter and leave reactions are ordinary journeys to this worker, whose
// trigger says what they listen to.
func decodeReaction(n *definition.Node, j *Journey, fields map[string]*definition.Node) bool {
	f, ok := fields["reactionKind"]
	if !ok {
		return true
	}
	kind, ok := f.String()
	if !ok {
		return false
	}
	switch kind {
	case ReactionEnter, ReactionLeave:
		return true
	case ReactionDwell:
	default:
		f.Errorf("unknown reaction kind %q: use %q, %q or %q", kind, ReactionEnter, ReactionLeave, ReactionDwell)
		return false
	}
	valid := true
	if f, ok := fields["sourceBucketId"]; ok {
		id, ok := f.String()
		j.SourceBucketID, j.sourcePath = id, f.Path()
		valid = valid && ok
	} else {
		n.At("sourceBucketId").Errorf("is required for a dwell reaction")
		valid = false
	}
	s, ok := fields["dwellSchedule"]
	if !ok {
		n.At("dwellSchedule").Errorf("is required for a dwell reaction")
		return false
	}
	schedule, ok := decodeDwellSchedule(s)
	if !ok || !valid {
		return false
	}
	j.Dwell = &schedule
	if want := DwellEvent(j.SourceBucketID, schedule.Label); j.Trigger.Event != "" && j.Trigger.Event != want {
		n.At("trigger").At("event").Errorf("must be %q: a dwell reaction is triggered by the dwell event of its bucket and schedule", want)
		return false
	}
	return true
}

// decodeDwellSchedule reads {label?, after | every}: milliseconds, as
// Hogsend writes them, or a duration (contract §2.2).
func decodeDwellSchedule(n *definition.Node) (DwellSchedule, bool) {
	fields, ok := n.Fields("label", "after", "every")
	if !ok {
		return DwellSchedule{}, false
	}
	after, hasAfter := fields["after"]
	every, hasEvery := fields["every"]
	if hasAfter == hasEvery {
		n.Errorf("must hold exactly one of after and every")
		return DwellSchedule{}, false
	}
	kind, node := "after", after
	if hasEvery {
		kind, node = "every", every
	}
	d, ok := decodeOffset(node)
	if !ok {
		return DwellSchedule{}, false
	}
	s := DwellSchedule{Label: dwellLabel(kind, d)}
	if hasEvery {
		s.Every = d
	} else {
		s.After = d
	}
	if f, ok := fields["label"]; ok {
		label, ok := f.String()
		if !ok {
			return DwellSchedule{}, false
		}
		if label != s.Label {
			f.Errorf("must be %q, the label of %s", s.Label, s)
			return DwellSchedule{}, false
		}
	}
	return s, true
}

// decodeOffset reads a schedule's after or every: a whole number of
// milliseconds that makes whole seconds, or a duration.
func decodeOffset(n *definition.Node) (time.Duration, bool) {
	if _, isObject := n.PeekFields(); isObject {
		d, ok := buckets.DecodeDuration(n)
		return d.Std(), ok
	}
	if _, isString := n.ScalarString(); isString {
		d, ok := buckets.DecodeDuration(n)
		return d.Std(), ok
	}
	ms, ok := n.Int()
	if !ok {
		return 0, false
	}
	if ms <= 0 || ms%1000 != 0 {
		n.Errorf("must be a positive whole number of seconds, in milliseconds (such as 604800000 for 7 days): %d is not", ms)
		return 0, false
	}
	d, err := buckets.NewDuration(0, 0, 0, ms/1000)
	if err != nil {
		n.Errorf("%v", err)
		return 0, false
	}
	return d.Std(), true
}

// CheckReactions returns an error for every dwell reaction whose
// sourceBucketId names no loaded bucket; known reports whether a bucket
// id is loaded.
func CheckReactions(js []*Journey, known func(bucketID string) bool) definition.Errors {
	var errs definition.Errors
	for _, j := range js {
		if j.Dwell != nil && !known(j.SourceBucketID) {
			errs = append(errs, definition.Error{File: j.File, Path: j.sourcePath,
				Message: fmt.Sprintf("no bucket has id %q", j.SourceBucketID)})
		}
	}
	return errs
}

// Reaction is a dwell schedule of a bucket with the journeys it starts.
type Reaction struct {
	DwellSchedule
	// Journeys are the ids of the enabled journeys triggered by the
	// schedule's event, in definition order.
	Journeys []string
}

// DwellReactions returns the dwell schedules of the bucket that enabled
// journeys react to, one per label, in definition order: two journeys
// on one schedule share its fires.
func (r *Registry) DwellReactions(bucketID string) []Reaction {
	var out []Reaction
	for _, j := range r.journeys {
		if j.Dwell == nil || j.SourceBucketID != bucketID {
			continue
		}
		i := 0
		for i < len(out) && out[i].Label != j.Dwell.Label {
			i++
		}
		if i == len(out) {
			out = append(out, Reaction{DwellSchedule: *j.Dwell})
		}
		out[i].Journeys = append(out[i].Journeys, j.ID)
	}
	return out
}
