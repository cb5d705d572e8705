package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// ErrInvalidInput marks an input no retry can fix: a command reports it as
// a usage error, and a task run with it fails without retrying.
var ErrInvalidInput = errors.New("invalid input")

// The statuses and reasons of the tasks' outputs.
const (
	// StatusIgnored: an ingest stored and evaluated nothing.
	StatusIgnored = "ignored"
	// StatusSkipped: an expiry timer or a backfill did nothing.
	StatusSkipped = "skipped"
	// StatusArmed: an expiry timer waits for its deadline.
	StatusArmed = "armed"
	// StatusLeft: an expiry timer left its member.
	StatusLeft = "left"
	// StatusDeferred: minDwell holds the member an expiry timer was for;
	// the sweep's deferred pass owns the leave.
	StatusDeferred = "deferred"
	// StatusUpToDate: a backfill found the bucket's members computed with
	// its current criteria.
	StatusUpToDate = "up_to_date"

	ReasonReservedPrefix     = "reserved_prefix"
	ReasonContactDeleted     = "contact_deleted"
	ReasonBucketDisabled     = "bucket_disabled"
	ReasonBucketUnregistered = "bucket_unregistered"
	ReasonStillMember        = "still_member"
	ReasonReArmed            = "re_armed_or_already_left"
)

// objectFields decodes a JSON object into its raw fields.
func objectFields(data []byte) (map[string]json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, errors.New("must be a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("is not valid JSON: %v", err)
	}
	return fields, nil
}

// jsonTextProblem says what in a JSON text decoding would hide, or "":
// bytes that are not UTF-8 (decoded as U+FFFD, so that two different
// user ids would become one), a \u0000 escape (Postgres stores no NUL in
// text or jsonb), or half of a UTF-16 surrogate pair.
func jsonTextProblem(text []byte) string {
	if !utf8.Valid(text) {
		return "is not valid UTF-8"
	}
	escape := func(i int) (rune, bool) { // the \uXXXX at text[i]
		if i+6 > len(text) || text[i] != '\\' || text[i+1] != 'u' {
			return 0, false
		}
		r, err := strconv.ParseUint(string(text[i+2:i+6]), 16, 32)
		return rune(r), err == nil
	}
	inString := false
	for i := 0; i < len(text); i++ {
		switch c := text[i]; {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\':
			r, ok := escape(i)
			switch {
			case !ok:
				i++ // a one-character escape
			case r == 0:
				return `holds a NUL character (\u0000)`
			case r >= 0xD800 && r < 0xDC00:
				if low, ok := escape(i + 6); !ok || low < 0xDC00 || low >= 0xE000 {
					return "holds half of a UTF-16 surrogate pair"
				}
				i += 11
			case r >= 0xDC00 && r < 0xE000:
				return "holds half of a UTF-16 surrogate pair"
			default:
				i += 5
			}
		}
	}
	return ""
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
