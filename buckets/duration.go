package buckets

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/bucketworker/bucket-worker/buckets/definition"
)

// Duration is a positive span of time in the canonical form of the
// definitions: hours (days folded in as 24 hours each), minutes and seconds,
// each kept as written. The zero Duration means "not set".
type Duration struct {
	Hours   int64
	Minutes int64
	Seconds int64
}

// maxDurationSeconds keeps every duration representable as a time.Duration.
const maxDurationSeconds = int64(time.Duration(1<<63-1) / time.Second)

var durationPattern = regexp.MustCompile(`^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$`)

// ParseDuration reads the string form: units d, h, m and s in that order,
// each at most once, such as "7d", "36h", "90m", "45s" or "1h30m".
func ParseDuration(s string) (Duration, error) {
	m := durationPattern.FindStringSubmatch(s)
	if s == "" || m == nil {
		return Duration{}, fmt.Errorf("invalid duration %q: use units d, h, m, s in that order, such as 7d, 36h or 1h30m", s)
	}
	var parts [4]int64
	for i, digits := range m[1:] {
		if digits == "" {
			continue
		}
		v, err := strconv.ParseInt(digits, 10, 64)
		if err != nil {
			return Duration{}, fmt.Errorf("invalid duration %q: number too large", s)
		}
		parts[i] = v
	}
	return NewDuration(parts[0], parts[1], parts[2], parts[3])
}

// NewDuration builds a Duration from its parts, which must be non-negative
// and add up to more than zero.
func NewDuration(days, hours, minutes, seconds int64) (Duration, error) {
	if days < 0 || hours < 0 || minutes < 0 || seconds < 0 {
		return Duration{}, errors.New("duration parts must not be negative")
	}
	const maxPart = maxDurationSeconds
	if days > maxPart/86400 || hours > maxPart/3600 || minutes > maxPart/60 || seconds > maxPart {
		return Duration{}, errors.New("duration is too long")
	}
	d := Duration{Hours: 24*days + hours, Minutes: minutes, Seconds: seconds}
	total := d.Hours*3600 + d.Minutes*60 + d.Seconds
	if total < 0 || total > maxDurationSeconds || d.Hours < 0 {
		return Duration{}, errors.New("duration is too long")
	}
	if total == 0 {
		return Duration{}, errors.New("duration must be greater than zero")
	}
	return d, nil
}

// MustDuration is ParseDuration that panics; for tests and examples.
func MustDuration(s string) Duration {
	d, err := ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

// IsZero reports whether the duration is unset.
func (d Duration) IsZero() bool { return d == Duration{} }

// Std converts the duration to a time.Duration.
func (d Duration) Std() time.Duration {
	return time.Duration(d.Hours)*time.Hour + time.Duration(d.Minutes)*time.Minute + time.Duration(d.Seconds)*time.Second
}

// String writes the duration for people, in whole days, hours, minutes
// and seconds, largest first: 720h is "30d", 90m "1h30m", 36h "1d12h". It
// parses back to the same length.
func (d Duration) String() string {
	if d.IsZero() {
		return ""
	}
	rest := int64(d.Std() / time.Second)
	var b strings.Builder
	for _, unit := range []struct {
		seconds int64
		name    string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}} {
		if n := rest / unit.seconds; n > 0 {
			b.WriteString(strconv.FormatInt(n, 10))
			b.WriteString(unit.name)
			rest -= n * unit.seconds
		}
	}
	return b.String()
}

// canonical is the object used for hashing: zero fields omitted.
func (d Duration) canonical() jsonObject {
	obj := jsonObject{}
	if d.Hours != 0 {
		obj["hours"] = d.Hours
	}
	if d.Minutes != 0 {
		obj["minutes"] = d.Minutes
	}
	if d.Seconds != 0 {
		obj["seconds"] = d.Seconds
	}
	return obj
}

// MarshalJSON writes the canonical object, {"hours":168}.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(stableJSON(d.canonical())), nil
}

// DecodeDuration reads either form of a duration from a definition file:
// the string form ("7d") or the object form ({days: 7}). A problem is
// recorded at the node.
func DecodeDuration(n *definition.Node) (Duration, bool) {
	if s, isString := n.ScalarString(); isString {
		d, err := ParseDuration(s)
		if err != nil {
			n.Errorf("%v", err)
			return Duration{}, false
		}
		return d, true
	}
	fields, ok := n.Fields("days", "hours", "minutes", "seconds")
	if !ok {
		return Duration{}, false
	}
	var parts [4]int64
	valid := true
	for i, key := range []string{"days", "hours", "minutes", "seconds"} {
		f, present := fields[key]
		if !present {
			continue
		}
		v, ok := f.Int()
		if !ok {
			valid = false
			continue
		}
		if v < 0 {
			f.Errorf("must not be negative")
			valid = false
			continue
		}
		parts[i] = v
	}
	if !valid {
		return Duration{}, false
	}
	d, err := NewDuration(parts[0], parts[1], parts[2], parts[3])
	if err != nil {
		n.Errorf("%v", err)
		return Duration{}, false
	}
	return d, true
}
