package buckets

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

// The vectors of contract §8: what Hogsend computes for the same criteria.
func TestCriteriaHashVectors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		criteria string
		want     string
	}{
		{"count within", `{"type":"event","eventName":"key.action","check":"count","operator":"gte","value":10,"within":{"hours":720}}`,
			"11804a22b835bdb9d0e61c43e5c570a74f833f3c25b5379695d5bbc6bc3fbb08"},
		{"absence", `{"type":"event","eventName":"app.active","check":"not_exists","within":{"hours":168}}`,
			"d74db0620bce92d94dbd20dff1df57021c0bfa5c0280ff9717e117e32b8b7637"},
		{"trial and", `{"type":"composite","operator":"and","conditions":[
			{"type":"property","property":"plan","operator":"eq","value":"trial"},
			{"type":"property","property":"trial_days_left","operator":"lte","value":3},
			{"type":"property","property":"converted","operator":"neq","value":true}]}`,
			"899050ed5c74ba16079771dbfbdb27c6bb97a18680c5e08d07feede3d47e4807"},
		{"lapsed active", `{"type":"composite","operator":"and","conditions":[
			{"type":"event","eventName":"app.active","check":"exists"},
			{"type":"event","eventName":"app.active","check":"not_exists","within":{"hours":168}}]}`,
			"fed78aea11b2d12190bd2fce09eb761541bf9487cb862b2b26b46b29c37a5a22"},
		{"float property", `{"type":"property","property":"score","operator":"gte","value":2.5}`,
			"b9cfceadc7de69a82d6d9d73a06ad31555625c04500e3760b4f3f5691eab1249"},
		// The same criteria written with days, a duration string and a
		// shuffled key order hash alike.
		{"days form", `{"within":{"days":30},"value":10,"operator":"gte","check":"count","eventName":"key.action","type":"event"}`,
			"11804a22b835bdb9d0e61c43e5c570a74f833f3c25b5379695d5bbc6bc3fbb08"},
		{"string form", `{"type":"event","eventName":"app.active","check":"not_exists","within":"7d"}`,
			"d74db0620bce92d94dbd20dff1df57021c0bfa5c0280ff9717e117e32b8b7637"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := mustCriteria(t, tc.criteria)
			require.Equal(t, tc.want, CriteriaHash(c), "canonical JSON: %s", CanonicalJSON(c))
		})
	}
}

func TestCanonicalJSON(t *testing.T) {
	t.Parallel()
	c := mustCriteria(t, `{"type":"event","eventName":"key.action","check":"count","operator":"gte","value":10,"within":{"days":1,"hours":2,"minutes":0,"seconds":5}}`)
	require.Equal(t, `{"check":"count","eventName":"key.action","operator":"gte","type":"event","value":10,"within":{"hours":26,"seconds":5}}`, CanonicalJSON(c))

	p := mustCriteria(t, `{"type":"property","property":"na\"me\u2028<","operator":"eq","value":"a\nb\u0001"}`)
	require.Equal(t, `{"operator":"eq","property":"na\"me`+"\u2028"+`<","type":"property","value":"a\nb\u0001"}`, CanonicalJSON(p))
}

// The fields of contract §3.5 and §3.6 hash canonically: a where in its
// written order, each condition canonical without a type, an aggregate's
// property a plain key, a relative date's duration canonical.
func TestCanonicalJSONOfFiltersAggregatesAndDates(t *testing.T) {
	t.Parallel()
	c := mustCriteria(t, `{"type":"event","eventName":"purchase","check":"sum","property":"amount","operator":"gte","value":100.0,"within":"30d",
		"where":[{"type":"property","property":"plan","operator":"eq","value":"pro"},{"property":"coupon","operator":"not_exists"}]}`)
	require.Equal(t, `{"check":"sum","eventName":"purchase","operator":"gte","property":"amount","type":"event","value":100,"where":[{"operator":"eq","property":"plan","value":"pro"},{"operator":"not_exists","property":"coupon"}],"within":{"hours":720}}`, CanonicalJSON(c))
	swapped := mustCriteria(t, `{"type":"event","eventName":"purchase","check":"sum","property":"amount","operator":"gte","value":100,"within":"30d",
		"where":[{"property":"coupon","operator":"not_exists"},{"property":"plan","operator":"eq","value":"pro"}]}`)
	require.NotEqual(t, CriteriaHash(c), CriteriaHash(swapped), "a where hashes in its written order")

	d := mustCriteria(t, `{"type":"property","property":"trial_ends_at","operator":"within_next","value":"3d"}`)
	require.Equal(t, `{"operator":"within_next","property":"trial_ends_at","type":"property","value":{"hours":72}}`, CanonicalJSON(d))
	require.Equal(t, CriteriaHash(d), CriteriaHash(mustCriteria(t, `{"type":"property","property":"trial_ends_at","operator":"within_next","value":{"hours":72}}`)))
}

func TestJSNumber(t *testing.T) {
	t.Parallel()
	cases := map[float64]string{
		0: "0", 1: "1", -1: "-1", 2.5: "2.5", 10: "10", 0.1: "0.1", 100: "100",
		1e21: "1e+21", 1e20: "100000000000000000000", 123456789012: "123456789012",
		0.000001: "0.000001", 0.0000001: "1e-7", 1.5e-7: "1.5e-7", 1.2345e25: "1.2345e+25",
		-0.5: "-0.5", 3.14159: "3.14159",
	}
	for f, want := range cases {
		require.Equal(t, want, jsNumber(f), "jsNumber(%v)", f)
	}
}

// mustCriteria decodes criteria JSON through the loader.
func mustCriteria(t *testing.T, criteria string) Condition {
	t.Helper()
	fsys := fstest.MapFS{"buckets/b.json": {Data: []byte(`{"id":"b","name":"B","criteria":` + criteria + `}`)}}
	bs, report := Load(fsys)
	require.NoError(t, report.Err())
	require.Len(t, bs, 1)
	return bs[0].Criteria
}
