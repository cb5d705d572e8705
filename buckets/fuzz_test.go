package buckets

import (
	"testing"
	"testing/fstest"
)

// FuzzParseDuration: the parser never panics, and what it accepts is
// positive and prints back to a string it accepts as the same duration.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "36h", "90m", "45s", "1h30m", "1d2h3m4s", "0s", "", "h", "7w", "99999999999999999999d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d.Std() <= 0 {
			t.Fatalf("%q parsed to a non-positive %v", s, d.Std())
		}
		again, err := ParseDuration(d.String())
		if err != nil || again.Std() != d.Std() {
			t.Fatalf("%q → %q → %v, %v", s, d.String(), again, err)
		}
	})
}

// FuzzLoad: the loader never panics on any file, and every bucket it
// accepts has criteria whose hash is stable.
func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"{id: a, name: A, criteria: {type: event, eventName: e, check: count, operator: gte, value: 3, within: 1d}}",
		`{"id":"b","name":"B","criteria":{"type":"composite","operator":"or","conditions":[{"type":"property","property":"p","operator":"eq","value":1.5}]}}`,
		"- {id: c, name: C, kind: manual}\n- [1, 2]\n",
		"id: &x a\nname: *x\ncriteria: {type: property, property: *x, operator: exists}",
	} {
		f.Add(s)
	}
	for _, data := range hostileFiles(f) {
		f.Add(string(data))
	}
	f.Fuzz(func(t *testing.T, text string) {
		bs, _ := Load(fstest.MapFS{"buckets/x.yaml": {Data: []byte(text)}})
		for _, b := range bs {
			if b.CriteriaHash != CriteriaHash(b.Criteria) || len(b.CriteriaHash) != 64 {
				t.Fatalf("unstable hash for %s", b)
			}
		}
	})
}
