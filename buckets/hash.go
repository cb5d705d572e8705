package buckets

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// jsonObject is an object whose keys stableJSON sorts.
type jsonObject map[string]any

// CriteriaHash is the sha256 (hex) of the stable JSON of the canonical
// criteria (contract §8): keys sorted by code point, no whitespace, absent
// fields omitted, numbers as JavaScript writes them, durations canonical.
// It equals what Hogsend computes for the same criteria.
func CriteriaHash(c Condition) string {
	sum := sha256.Sum256([]byte(CanonicalJSON(c)))
	return hex.EncodeToString(sum[:])
}

// CanonicalJSON is the stable JSON text that CriteriaHash hashes.
func CanonicalJSON(c Condition) string {
	return stableJSON(c.canonical())
}

func stableJSON(v any) string {
	var b strings.Builder
	writeStable(&b, v)
	return b.String()
}

func writeStable(b *strings.Builder, v any) {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case string:
		writeJSString(b, v)
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case int:
		b.WriteString(strconv.Itoa(v))
	case float64:
		b.WriteString(jsNumber(v))
	case []any:
		b.WriteByte('[')
		for i, item := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			writeStable(b, item)
		}
		b.WriteByte(']')
	case jsonObject:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareCodePoints)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSString(b, k)
			b.WriteByte(':')
			writeStable(b, v[k])
		}
		b.WriteByte('}')
	case map[string]any:
		writeStable(b, jsonObject(v))
	default:
		panic("stableJSON: unsupported type")
	}
}

// compareCodePoints orders strings by Unicode code point. Go compares UTF-8
// bytes, which gives the same order.
func compareCodePoints(a, b string) int { return strings.Compare(a, b) }

// writeJSString quotes s the way JSON.stringify does: only the quote, the
// backslash and control characters are escaped.
func writeJSString(b *strings.Builder, s string) {
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[r>>4])
			b.WriteByte(hexDigits[r&0xf])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
}

// jsNumber formats f as JavaScript's Number.prototype.toString does
// (ECMA-262 Number::toString with radix 10).
func jsNumber(f float64) string {
	if f == 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		if f == 0 {
			return "0"
		}
		return "null" // JSON.stringify writes NaN and Infinity as null
	}
	sign := ""
	if f < 0 {
		sign = "-"
		f = -f
	}
	// Shortest digits that round-trip, as d.ddddde±x.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mantissa, expText, _ := strings.Cut(e, "e")
	digits := strings.Replace(mantissa, ".", "", 1)
	exp, _ := strconv.Atoi(expText)
	k, n := len(digits), exp+1
	var out string
	switch {
	case k <= n && n <= 21:
		out = digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		out = digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		out = "0." + strings.Repeat("0", -n) + digits
	default:
		expSign := "+"
		if n-1 < 0 {
			expSign = "-"
		}
		out = digits[:1]
		if k > 1 {
			out += "." + digits[1:]
		}
		out += "e" + expSign + strconv.Itoa(absInt(n-1))
	}
	return sign + out
}

func absInt(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
