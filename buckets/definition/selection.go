package definition

import (
	"regexp"
	"slices"
	"strings"
)

// IDPattern is the format of bucket and journey ids.
var IDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Selection is a parsed ENABLED_BUCKETS / ENABLED_JOURNEYS value: every id
// ("*") or a list of ids.
type Selection struct {
	all bool
	ids []string
}

// ParseSelection reads "*" or a comma-separated list of ids, trimming
// whitespace. An empty value selects everything, like "*".
func ParseSelection(s string) Selection {
	s = strings.TrimSpace(s)
	if s == "" || s == "*" {
		return Selection{all: true}
	}
	var ids []string
	for _, part := range strings.Split(s, ",") {
		if id := strings.TrimSpace(part); id != "" {
			ids = append(ids, id)
		}
	}
	return Selection{ids: ids}
}

// Includes reports whether the selection names the id.
func (s Selection) Includes(id string) bool { return s.all || slices.Contains(s.ids, id) }

// Unmatched returns the listed ids that are not among known.
func (s Selection) Unmatched(known []string) []string {
	var out []string
	for _, id := range s.ids {
		if !slices.Contains(known, id) {
			out = append(out, id)
		}
	}
	return out
}

// Pick returns the items that are statically enabled and selected, and a
// warning for every id of the selection (read from variable) that matches
// no item. describe gives an item's id and static switch.
func Pick[T any](sel Selection, variable, kind string, items []T, describe func(T) (id string, enabled bool)) (picked []T, warnings []string) {
	ids := make([]string, len(items))
	for i, item := range items {
		id, enabled := describe(item)
		ids[i] = id
		if enabled && sel.Includes(id) {
			picked = append(picked, item)
		}
	}
	for _, id := range sel.Unmatched(ids) {
		warnings = append(warnings, variable+" names "+id+", which matches no "+kind)
	}
	return picked, warnings
}
