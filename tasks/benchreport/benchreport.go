// Package benchreport reports a benchmark's figure next to the baseline
// measured in the same run, in the form scripts/bench tabulates: the
// figure under its unit, the baseline under "base-" + unit, and their
// ratio, figure / baseline, under "x-base".
package benchreport

import (
	"testing"
	"time"
)

// Rate reports count things per second, done in elapsed, next to the same
// count done by the baseline in baseline. A ratio above 1 is faster than
// the baseline.
func Rate(b *testing.B, unit string, count float64, elapsed, baseline time.Duration) {
	Report(b, unit, count/elapsed.Seconds(), count/baseline.Seconds())
}

// Time reports the mean time of one of b.N runs in seconds, next to the
// baseline's. A ratio above 1 is slower than the baseline.
func Time(b *testing.B, elapsed, baseline time.Duration) {
	n := float64(b.N)
	Report(b, "s/run", elapsed.Seconds()/n, baseline.Seconds()/n)
}

// ReportFloor reports a second baseline of a figure Report reported: the
// floor the design can reach, and the ratio to it.
func ReportFloor(b *testing.B, unit string, figure, floor float64) {
	b.ReportMetric(floor, "base2-"+unit)
	if floor != 0 {
		b.ReportMetric(figure/floor, "x-base2")
	}
}

// Report reports a figure, its baseline and their ratio.
func Report(b *testing.B, unit string, figure, baseline float64) {
	b.ReportMetric(figure, unit)
	b.ReportMetric(baseline, "base-"+unit)
	if baseline != 0 {
		b.ReportMetric(figure/baseline, "x-base")
	}
}

// Turns is the order in which iteration i of a benchmark runs its figure
// and its baseline, as the values of an isBaseline flag: the figure first
// in even iterations, the baseline first in odd ones (Rotation).
func Turns(i int) []bool {
	order := Rotation(i, 2)
	return []bool{order[0] == 1, order[1] == 1}
}

// Rotation is the order in which iteration i of a benchmark runs its n
// sides (0 the figure, then its baselines): each side goes first in turn.
// The sides share a server, and each leaves it to the next in a state of
// its making: a Hatchet still busy with the burst it was sent, or pages
// already written since the last checkpoint — the first to write a page
// after one also writes its full image to the WAL. A benchmark that always
// ran one side first would charge that side with all of it: the date join
// pass measured 1.49× its raw SQL going first and 1.32× going second, in
// one hour.
func Rotation(i, n int) []int {
	order := make([]int, n)
	for k := range order {
		order[k] = (i + k) % n
	}
	return order
}
