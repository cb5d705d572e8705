package buckets

import (
	"regexp"
	"strconv"
	"time"
)

// datePattern is what a relative-date leg reads as a time (contract §3.6):
// a date, or an RFC 3339 timestamp with at most nanoseconds and an offset.
// Digits are ASCII only; the SQL compiler's bucket_worker_time uses the
// same pattern.
var datePattern = regexp.MustCompile(`^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:Z|([+-])([0-9]{2}):([0-9]{2})))?$`)

// ParseTime reads a property as a relative-date leg does: a string holding
// an RFC 3339 timestamp (fractions of a second past the microsecond, which
// Postgres does not keep, are dropped) or a date YYYY-MM-DD, midnight UTC.
// Anything else — absent, null, a number, an impossible date such as
// 2026-02-30, the year 0 — is no time.
func ParseTime(v any) (time.Time, bool) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, false
	}
	m := datePattern.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, false
	}
	num := func(i int) int {
		n, _ := strconv.Atoi(m[i])
		return n
	}
	year, month, day := num(1), num(2), num(3)
	if year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(year, month) {
		return time.Time{}, false
	}
	var hour, minute, second, micros int
	if m[4] != "" {
		hour, minute, second = num(4), num(5), num(6)
		if hour > 23 || minute > 59 || second > 59 {
			return time.Time{}, false
		}
		if frac := m[7]; frac != "" {
			frac = (frac + "00000")[:6]
			micros, _ = strconv.Atoi(frac)
		}
	}
	t := time.Date(year, time.Month(month), day, hour, minute, second, micros*1000, time.UTC)
	if m[8] != "" {
		oh, om := num(9), num(10)
		if oh > 23 || om > 59 {
			return time.Time{}, false
		}
		offset := time.Duration(oh)*time.Hour + time.Duration(om)*time.Minute
		if m[8] == "+" {
			offset = -offset
		}
		t = t.Add(offset)
	}
	return t, true
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// HoldsAt reports whether the time t satisfies the relative-date leg at
// the instant now.
func (c *PropertyCondition) HoldsAt(t, now time.Time) bool {
	from, to := c.DateWindow(now)
	switch c.Operator {
	case PropWithinLast, PropWithinNext:
		return !t.Before(from) && !t.After(to)
	case PropBeforeLast:
		return t.Before(to)
	case PropAfterNext:
		return t.After(from)
	}
	return false
}

// DateWindow is the window of a relative-date leg at now: the times it
// accepts are within [from, to] for within_last and within_next, before to
// for before_last (from zero), after from for after_next (to zero).
func (c *PropertyCondition) DateWindow(now time.Time) (from, to time.Time) {
	d := c.Span.Std()
	switch c.Operator {
	case PropWithinLast:
		return now.Add(-d), now
	case PropBeforeLast:
		return time.Time{}, now.Add(-d)
	case PropWithinNext:
		return now, now.Add(d)
	case PropAfterNext:
		return now.Add(d), time.Time{}
	}
	return time.Time{}, time.Time{}
}

// DateExpiry is when a within_next or within_last leg stops holding for the
// time t if nothing changes: t itself, or t + D. Other legs never expire
// by the clock alone (ok false).
func (c *PropertyCondition) DateExpiry(t time.Time) (time.Time, bool) {
	switch c.Operator {
	case PropWithinNext:
		return t, true
	case PropWithinLast:
		return t.Add(c.Span.Std()), true
	}
	return time.Time{}, false
}
