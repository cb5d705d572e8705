package buckets

import (
	"slices"

	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// Registry is the immutable set of enabled buckets, built once at boot and
// shared by every task. It indexes buckets by every event and property
// their criteria reference, to narrow the candidates of an event, and by
// the buckets their bucket legs read (contract §13).
type Registry struct {
	buckets    []*Bucket
	byID       map[string]*Bucket
	byEvent    map[string][]*Bucket
	byProperty map[string][]*Bucket
	dependents map[string][]*Bucket
}

// NewRegistry indexes the given buckets, which it keeps in order: the
// order Load returns them in, each after the buckets it references.
func NewRegistry(buckets []*Bucket) *Registry {
	r := &Registry{
		buckets:    slices.Clone(buckets),
		byID:       make(map[string]*Bucket, len(buckets)),
		byEvent:    map[string][]*Bucket{},
		byProperty: map[string][]*Bucket{},
		dependents: map[string][]*Bucket{},
	}
	for _, b := range buckets {
		r.byID[b.ID] = b
		for _, e := range b.EventNames {
			r.byEvent[e] = append(r.byEvent[e], b)
		}
		for _, p := range b.PropertyNames {
			r.byProperty[p] = append(r.byProperty[p], b)
		}
		for _, id := range b.References() {
			r.dependents[id] = append(r.dependents[id], b)
		}
	}
	return r
}

// All returns every bucket of the registry in dependency order: each after
// every bucket it references, in definition order otherwise.
func (r *Registry) All() []*Bucket { return slices.Clone(r.buckets) }

// Dependents returns the buckets whose criteria reference the bucket, in
// dependency order.
func (r *Registry) Dependents(id string) []*Bucket { return slices.Clone(r.dependents[id]) }

// HasDependents reports whether any bucket references one of the buckets.
func (r *Registry) HasDependents() bool { return len(r.dependents) > 0 }

// Len is the number of buckets.
func (r *Registry) Len() int { return len(r.buckets) }

// Get returns the bucket with the id.
func (r *Registry) Get(id string) (*Bucket, bool) {
	b, ok := r.byID[id]
	return b, ok
}

// ForEvent returns the buckets whose criteria reference the event.
func (r *Registry) ForEvent(name string) []*Bucket { return slices.Clone(r.byEvent[name]) }

// ForProperty returns the buckets whose criteria reference the property.
func (r *Registry) ForProperty(name string) []*Bucket { return slices.Clone(r.byProperty[name]) }

// Candidates returns, in definition order and without repeats, the buckets
// an event can change: those referencing the event name and those
// referencing any of the given contact property keys (contract §5.3).
func (r *Registry) Candidates(event string, propertyKeys []string) []*Bucket {
	hit := map[string]bool{}
	for _, b := range r.byEvent[event] {
		hit[b.ID] = true
	}
	for _, k := range propertyKeys {
		for _, b := range r.byProperty[k] {
			hit[b.ID] = true
		}
	}
	var out []*Bucket
	for _, b := range r.buckets {
		if hit[b.ID] {
			out = append(out, b)
		}
	}
	return out
}

// EventNames returns every event name referenced by a bucket, sorted.
func (r *Registry) EventNames() []string {
	names := make([]string, 0, len(r.byEvent))
	for name := range r.byEvent {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Enabled returns the buckets that are statically enabled and selected, a
// warning for every selected id that matches no loaded bucket, and an
// error for every bucket leg of an enabled bucket that names one left out.
func Enabled(all []*Bucket, sel definition.Selection) (enabled []*Bucket, warnings []string, errs []definition.Error) {
	enabled, warnings = definition.Pick(sel, "ENABLED_BUCKETS", "bucket", all, func(b *Bucket) (string, bool) { return b.ID, b.Enabled })
	return enabled, warnings, checkEnabledReferences(enabled)
}
