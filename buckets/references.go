package buckets

import (
	"fmt"
	"slices"
	"strings"

	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// MaxReferenceDepth is how long a chain of bucket legs may be: a bucket
// referencing a bucket that references another is two deep (contract §13).
const MaxReferenceDepth = 8

// legs returns the bucket legs of the criteria, in order.
func legs(c Condition) []*BucketCondition {
	var out []*BucketCondition
	Walk(c, func(_ string, c Condition) {
		if leg, ok := c.(*BucketCondition); ok {
			out = append(out, leg)
		}
	})
	return out
}

// link checks the bucket legs of the loaded buckets against each other
// (contract §13) and reports every problem with its file and path: a leg
// naming a bucket that is not loaded or statically disabled, references
// that form a cycle (named a → b → a), a chain of references deeper than
// MaxReferenceDepth. A bucket with such a problem, and every bucket that
// references it, is left out. The others get their criteria hash, which
// covers the hashes of the buckets they reference, and are returned in
// dependency order: each after every bucket it references, in file order
// otherwise.
func link(loaded []*Bucket, report *definition.Report) []*Bucket {
	byID := make(map[string]*Bucket, len(loaded))
	for _, b := range loaded {
		byID[b.ID] = b
	}
	fail := func(leg *BucketCondition, format string, args ...any) {
		report.Errors = append(report.Errors, definition.Error{File: leg.file, Path: leg.path, Message: fmt.Sprintf(format, args...)})
	}
	bad := map[string]bool{}
	for _, b := range loaded {
		for _, leg := range legs(b.Criteria) {
			switch ref, ok := byID[leg.BucketID]; {
			case !ok:
				fail(leg, "no bucket %q is loaded (a bucket leg needs a bucket defined without errors)", leg.BucketID)
				bad[b.ID] = true
			case !ref.Enabled:
				fail(leg, "bucket %q is disabled (enabled: false): a bucket leg needs it enabled", leg.BucketID)
				bad[b.ID] = true
			}
		}
	}
	// One depth-first walk finds every cycle: a leg to a bucket still on
	// the walk's stack closes one. Each bucket of a cycle is reported once,
	// with the cycle from its own point of view.
	state := map[string]int{} // 0 not seen, 1 on the stack, 2 done
	var stack []string
	var visit func(b *Bucket)
	visit = func(b *Bucket) {
		state[b.ID] = 1
		stack = append(stack, b.ID)
		for _, id := range b.References() {
			ref, ok := byID[id]
			switch {
			case !ok:
			case state[id] == 0:
				visit(ref)
			case state[id] == 1:
				cycle := stack[slices.Index(stack, id):]
				for i, member := range cycle {
					if !bad[member] {
						next := cycle[(i+1)%len(cycle)]
						fail(firstLeg(byID[member], next), "the bucket legs form a cycle: %s", cycleText(cycle, i))
						bad[member] = true
					}
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[b.ID] = 2
	}
	for _, b := range loaded {
		if state[b.ID] == 0 {
			visit(b)
		}
	}
	depth := map[string]int{}
	var depthOf func(b *Bucket, seen map[string]bool) int
	depthOf = func(b *Bucket, seen map[string]bool) int {
		if d, ok := depth[b.ID]; ok {
			return d
		}
		if seen[b.ID] {
			return 0 // a cycle, reported above
		}
		seen[b.ID] = true
		d := 0
		for _, leg := range legs(b.Criteria) {
			if ref, ok := byID[leg.BucketID]; ok {
				d = max(d, 1+depthOf(ref, seen))
			}
		}
		depth[b.ID] = d
		return d
	}
	for _, b := range loaded {
		if d := depthOf(b, map[string]bool{}); d > MaxReferenceDepth && !bad[b.ID] {
			leg := legs(b.Criteria)[0]
			fail(leg, "the chain of bucket legs from %q is %d deep; at most %d is allowed", b.ID, d, MaxReferenceDepth)
			bad[b.ID] = true
		}
	}
	// A bucket that references a left-out bucket is left out too.
	for changed := true; changed; {
		changed = false
		for _, b := range loaded {
			if bad[b.ID] {
				continue
			}
			for _, leg := range legs(b.Criteria) {
				if bad[leg.BucketID] {
					fail(leg, "bucket %q has errors of its own: this leg cannot read it", leg.BucketID)
					bad[b.ID], changed = true, true
					break
				}
			}
		}
	}

	var ordered []*Bucket
	placed := map[string]bool{}
	var place func(b *Bucket)
	place = func(b *Bucket) {
		if placed[b.ID] {
			return
		}
		placed[b.ID] = true
		for _, leg := range legs(b.Criteria) {
			ref := byID[leg.BucketID]
			place(ref)
			leg.hash = ref.CriteriaHash
		}
		if len(legs(b.Criteria)) > 0 {
			b.CriteriaHash = CriteriaHash(b.Criteria)
		}
		ordered = append(ordered, b)
	}
	for _, b := range loaded {
		if !bad[b.ID] {
			place(b)
		}
	}
	return ordered
}

// cycleText writes the cycle from its i-th bucket back to it, a → b → a,
// naming at most MaxReferenceDepth buckets of a longer one.
func cycleText(cycle []string, i int) string {
	n := len(cycle)
	names := make([]string, 0, min(n, MaxReferenceDepth)+2)
	for k := 0; k < min(n, MaxReferenceDepth); k++ {
		names = append(names, cycle[(i+k)%n])
	}
	if n > MaxReferenceDepth {
		names = append(names, fmt.Sprintf("… (%d buckets)", n))
	}
	return strings.Join(append(names, cycle[i]), " → ")
}

// firstLeg is b's first leg naming id.
func firstLeg(b *Bucket, id string) *BucketCondition {
	ls := legs(b.Criteria)
	if i := slices.IndexFunc(ls, func(l *BucketCondition) bool { return l.BucketID == id }); i >= 0 {
		return ls[i]
	}
	return ls[0]
}

// References returns the ids of the buckets the criteria's bucket legs
// name, without repeats, in order.
func (b *Bucket) References() []string {
	var ids []string
	for _, leg := range legs(b.Criteria) {
		if !slices.Contains(ids, leg.BucketID) {
			ids = append(ids, leg.BucketID)
		}
	}
	return ids
}

// checkEnabledReferences reports the bucket legs of the enabled buckets
// that name a bucket ENABLED_BUCKETS leaves out: a leg reads a bucket the
// worker maintains (contract §13).
func checkEnabledReferences(enabled []*Bucket) []definition.Error {
	on := map[string]bool{}
	for _, b := range enabled {
		on[b.ID] = true
	}
	var errs []definition.Error
	for _, b := range enabled {
		for _, leg := range legs(b.Criteria) {
			if !on[leg.BucketID] {
				errs = append(errs, definition.Error{File: leg.file, Path: leg.path,
					Message: fmt.Sprintf("bucket %q is not enabled (ENABLED_BUCKETS): a bucket leg needs it enabled", leg.BucketID)})
			}
		}
	}
	return errs
}
