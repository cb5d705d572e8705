package buckets

import (
	"math"
	"math/big"
	"strconv"
)

// EventTally is what an event leg read of the user's events in its window.
type EventTally struct {
	// InWindow is how many events of the leg's name are in the window, and
	// Count how many of those pass its where (all of them without one).
	InWindow int64
	Count    int64
	// Fed is how many of the counted events hold the aggregated property
	// as a number; Min and Max are the least and greatest of those values.
	Fed      int64
	Min, Max float64
	sum      exactSum
}

func (t *EventTally) add(v float64) {
	if t.Fed == 0 || v < t.Min {
		t.Min = v
	}
	if t.Fed == 0 || v > t.Max {
		t.Max = v
	}
	t.Fed++
	t.sum.add(v)
}

// Sum is the sum of the fed values, rounded to a double (NaN when both
// infinities were fed); the comparison itself is exact.
func (t EventTally) Sum() float64 { return t.sum.float() }

// Aggregate is the value the check compared, for people, and false when
// there was none (avg, min or max of no values).
func (t EventTally) Aggregate(check EventCheck) (float64, bool) {
	switch check {
	case CheckSum:
		return t.Sum(), true
	case CheckAvg:
		return t.Sum() / float64(t.Fed), t.Fed > 0
	case CheckMin:
		return t.Min, t.Fed > 0
	case CheckMax:
		return t.Max, t.Fed > 0
	}
	return 0, false
}

// exactSum adds doubles without rounding. Each value counts as the
// shortest decimal that reads back as it (what JavaScript and Postgres
// print for it), so that 0.1 + 0.2 is 0.3, and a sum and an average are
// compared with their threshold exactly, in any order of the values. The
// SQL compiler sums the same decimals as numerics.
type exactSum struct {
	finite         big.Rat
	posInf, negInf bool
}

func (s *exactSum) add(v float64) {
	switch {
	case math.IsInf(v, 1):
		s.posInf = true
	case math.IsInf(v, -1):
		s.negInf = true
	default:
		s.finite.Add(&s.finite, exactOf(v).finite)
	}
}

// extended is an exact number or an infinity.
type extended struct {
	finite *big.Rat
	inf    int // +1, -1 or 0 for finite
}

// exactOf is the shortest decimal of v, exactly.
func exactOf(v float64) extended {
	if math.IsInf(v, 0) {
		return extended{inf: int(math.Copysign(1, v)), finite: new(big.Rat)}
	}
	r, _ := new(big.Rat).SetString(strconv.FormatFloat(v, 'g', -1, 64))
	return extended{finite: r}
}

func (a extended) cmp(b extended) int {
	if a.inf != b.inf {
		if a.inf < b.inf {
			return -1
		}
		return 1
	}
	if a.inf != 0 {
		return 0
	}
	return a.finite.Cmp(b.finite)
}

// compare reports whether the sum compares with threshold × n: the sum
// against its threshold for n = 1, the average for n values.
func (s *exactSum) compare(op CountOperator, threshold extended, n int64) bool {
	if s.posInf && s.negInf {
		return false // the sum is not a number
	}
	sum := extended{finite: &s.finite}
	switch {
	case s.posInf:
		sum.inf = 1
	case s.negInf:
		sum.inf = -1
	}
	if threshold.inf == 0 && n != 1 {
		threshold.finite = new(big.Rat).Mul(threshold.finite, new(big.Rat).SetInt64(n))
	}
	return compares(sum.cmp(threshold), op)
}

func (s *exactSum) float() float64 {
	switch {
	case s.posInf && s.negInf:
		return math.NaN()
	case s.posInf:
		return math.Inf(1)
	case s.negInf:
		return math.Inf(-1)
	}
	f, _ := s.finite.Float64()
	return f
}
