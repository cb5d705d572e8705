package tasks

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseIngestPayload: the payload parser never panics, and what it
// accepts keeps the input rules of contract §7.
func FuzzParseIngestPayload(f *testing.F) {
	for _, s := range []string{
		`{"userId":"u"}`,
		`{"userId":"u","userEmail":"u@x.io","properties":{"plan":"pro","n":1e309},"contactProperties":{"a":[1,{"b":null}]},` +
			`"occurredAt":"2026-11-29T10:00:00Z","idempotencyKey":"k-1"}`,
		"{\"userId\":\"c\xff\"}", `{"userId":"c\u0000"}`, `{"userId":"\ud800"}`, `{"userId":"\ud83d\ude00"}`,
		`{"userId":"u","idempotencyKey":"bucket:b:u:entered:1"}`, `{"userId":"u","idempotencyKey":""}`,
		`{"userId":"u","occurredAt":"0000-01-01T00:00:00Z"}`, `{"userId":"u","properties":[1]}`, `[]`, `"x"`, `{`,
	} {
		f.Add("app.active", s)
	}
	f.Fuzz(func(t *testing.T, event, payload string) {
		ev, err := ParseIngestPayload(event, []byte(payload))
		if err != nil {
			return
		}
		for name, s := range map[string]string{"event": ev.Event, "userId": ev.UserID} {
			if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				t.Fatalf("accepted %s %q", name, s)
			}
		}
		if strings.TrimSpace(ev.UserID) == "" || len(ev.UserID) > MaxKeyBytes {
			t.Fatalf("accepted userId %q", ev.UserID)
		}
		if k := ev.IdempotencyKey; k != nil && (*k == "" || len(*k) > MaxKeyBytes ||
			strings.HasPrefix(*k, reservedPrefix) || strings.HasPrefix(*k, runKeyPrefix) || strings.ContainsRune(*k, 0)) {
			t.Fatalf("accepted idempotencyKey %q", *k)
		}
		if (ev.Properties == nil) != (ev.PropertiesJSON == nil) || (ev.ContactProperties == nil) != (ev.ContactPropertiesJSON == nil) {
			t.Fatalf("properties decoded and stored disagree: %s", payload)
		}
		if ev.OccurredAt != nil && ev.OccurredAt.Year() < 1 {
			t.Fatalf("accepted occurredAt %s", ev.OccurredAt)
		}
	})
}

// FuzzParseArmExpiry: the arm parser never panics, and what it accepts
// names a row, a bucket and a user, and a time Postgres stores.
func FuzzParseArmExpiry(f *testing.F) {
	for _, s := range []string{
		`{"rowId":"6f1c2a4e-0000-4000-8000-000000000001","bucketId":"b","userId":"u","userEmail":"",` +
			`"armedExpiresAt":"2026-11-29T12:15:00.123456Z","msUntilExpiry":1500}`,
		`{"rowId":"x","bucketId":"b","userId":"u","armedExpiresAt":"2026-11-29T12:15:00Z"}`,
		`{"rowId":"6f1c2a4e-0000-4000-8000-000000000001","bucketId":"b","userId":"u\u0000","armedExpiresAt":"2026-11-29T12:15:00Z"}`,
		`{"rowId":"6f1c2a4e-0000-4000-8000-000000000001","bucketId":"b","userId":"u","armedExpiresAt":"0000-01-01T00:00:00Z"}`,
		`{"msUntilExpiry":"x"}`, `[]`, `null`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		a, err := ParseArmExpiry([]byte(payload))
		if err != nil {
			return
		}
		if a.RowID == "" || a.BucketID == "" || a.UserID == "" || a.ExpiresAt.Year() < 1 ||
			strings.ContainsRune(a.UserID, 0) || !utf8.ValidString(a.UserID) {
			t.Fatalf("accepted %+v", a)
		}
	})
}
