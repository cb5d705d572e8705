package tasks

import "testing"

// BenchmarkExplain explains a count bucket and a composite for a user with
// 10 000 events (the contract asks for well under 100 ms).
func BenchmarkExplain(b *testing.B) {
	e := newEnv(b, defs{"buckets/power.yaml": powerUsers, "buckets/engaged-pro.yaml": proAndActive})
	e.contact("busy", `{"plan":"pro"}`)
	e.exec(`INSERT INTO user_events (user_id, event, occurred_at)
		SELECT 'busy', CASE WHEN i % 2 = 0 THEN 'key.action' ELSE 'app.active' END, ?::timestamptz - i * interval '5 minutes'
		FROM generate_series(1, 10000) i`, t0)
	e.exec("ANALYZE user_events")
	for b.Loop() {
		for _, bucketID := range []string{"power", "engaged-pro"} {
			if _, err := Explain(e.ctx, e.deps, "busy", bucketID); err != nil {
				b.Fatal(err)
			}
		}
	}
}
