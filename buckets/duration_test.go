package buckets

import "testing"

// TestDurationString: durations print in whole days, hours, minutes and
// seconds, whatever form they were written in (explain, history, errors).
func TestDurationString(t *testing.T) {
	t.Parallel()
	for written, want := range map[string]string{
		"30d": "30d", "720h": "30d", "36h": "1d12h", "90m": "1h30m", "1h30m": "1h30m",
		"45s": "45s", "3600s": "1h", "1d1m1s": "1d1m1s", "7d": "7d", "15m": "15m",
	} {
		if got := MustDuration(written).String(); got != want {
			t.Errorf("%s prints as %q, want %q", written, got, want)
		}
	}
}
