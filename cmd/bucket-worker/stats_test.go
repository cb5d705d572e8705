package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/db/dbtest"
)

// TestStats reads membership rows with known entered_at and left_at over
// three days: the series of joins, leaves and sizes per day, the totals and
// the average dwell are exact, an erased user's rows count nowhere, and
// the text output draws the sizes.
func TestStats(t *testing.T) {
	t.Parallel()
	conn, url := dbtest.New(t)
	ctx := context.Background()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "buckets"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "buckets", "s-pro.yaml"),
		[]byte("id: s-pro\nname: S pro\ncriteria: {type: property, property: plan, operator: eq, value: pro}\n"), 0o644))

	today := time.Now().UTC().Truncate(24 * time.Hour)
	day := func(d int, h time.Duration) time.Time { return today.AddDate(0, 0, d).Add(h) }
	at := func(t time.Time) *time.Time { return &t }
	left := func(user string, entered, gone time.Time, epoch int) db.Membership {
		return db.Membership{UserID: user, BucketID: "s-pro", Status: db.StatusLeft, EnteredAt: entered, LeftAt: at(gone), EntryCount: epoch}
	}
	active := func(user string, entered time.Time, epoch int) db.Membership {
		return db.Membership{UserID: user, BucketID: "s-pro", Status: db.StatusActive, EnteredAt: entered, EntryCount: epoch}
	}
	erased := active("erased", day(-2, 4*time.Hour), 1)
	erased.DeletedAt = at(day(-1, 0))
	require.NoError(t, dbtest.InsertMemberships(ctx, conn, []db.Membership{
		active("before", day(-3, 0), 1),                          // a member when the series starts
		left("a", day(-2, time.Hour), day(-1, 2*time.Hour), 1),   // 25 h
		active("b", day(-2, 3*time.Hour), 1),                     //
		left("c", day(-1, 5*time.Hour), day(-1, 6*time.Hour), 1), // 1 h
		left("old", day(-5, 0), day(-4, 0), 1),                   // 24 h, before the series
		erased,
	}))

	lo := time.Now()
	r := runBinary(t, []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir},
		"stats", "--bucket", "s-pro", "--period", "day", "--since", day(-2, 12*time.Hour).Format(time.RFC3339), "--json")
	hi := time.Now()
	require.Equal(t, 0, r.code, r.stderr)
	var out struct {
		Period  string `json:"period"`
		Buckets []struct {
			BucketID     string   `json:"bucketId"`
			Size         int      `json:"size"`
			Entered      int      `json:"entered"`
			Left         int      `json:"left"`
			AvgDwellSecs *float64 `json:"avgDwellSecs"`
			Series       []struct {
				At      string `json:"at"`
				Entered int    `json:"entered"`
				Left    int    `json:"left"`
				Size    int    `json:"size"`
			} `json:"series"`
		} `json:"buckets"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.Len(t, out.Buckets, 1)
	b := out.Buckets[0]
	require.Equal(t, "s-pro", b.BucketID)
	require.Equal(t, 2, b.Size, "before and b")
	require.Equal(t, 5, b.Entered, "every membership but the erased user's")
	require.Equal(t, 3, b.Left)
	type point struct {
		At                  time.Time
		Entered, Left, Size int
	}
	var series []point
	for _, p := range b.Series {
		at, err := time.Parse(time.RFC3339, p.At)
		require.NoError(t, err)
		series = append(series, point{at, p.Entered, p.Left, p.Size})
	}
	require.Equal(t, []point{
		{day(-2, 0), 2, 0, 3}, // a and b join; before was in
		{day(-1, 0), 1, 2, 2}, // c joins; a and c leave
		{day(0, 0), 0, 0, 2},
	}, series)

	// Hogsend's average: left_at − entered_at for a membership that ended,
	// now − entered_at for an active one.
	avg := func(now time.Time) float64 {
		total := (25*time.Hour + time.Hour + 24*time.Hour + now.Sub(day(-3, 0)) + now.Sub(day(-2, 3*time.Hour))).Seconds()
		return total / 5
	}
	require.NotNil(t, b.AvgDwellSecs)
	require.GreaterOrEqual(t, *b.AvgDwellSecs, avg(lo)-0.001)
	require.LessOrEqual(t, *b.AvgDwellSecs, avg(hi)+0.001)

	text := runBinary(t, []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir},
		"stats", "--period", "day", "--since", day(-2, 0).Format(time.RFC3339))
	require.Equal(t, 0, text.code, text.stderr)
	require.Contains(t, text.stdout, "s-pro")
	require.Contains(t, text.stdout, "█▁▁", "the sizes 3, 2, 2 as a sparkline")

	for _, bad := range [][]string{{"--period", "month"}, {"--since", "yesterday"}, {"--bucket", "nope"}} {
		r := runBinary(t, []string{"DATABASE_URL=" + url, "DEFINITIONS_DIR=" + dir}, append([]string{"stats"}, bad...)...)
		require.Equal(t, 2, r.code, "%v: %s", bad, r.stderr)
		require.Contains(t, r.stderr, strings.TrimPrefix(bad[0], ""))
	}
}

func TestSparkline(t *testing.T) {
	require.Equal(t, "▁▄█", sparkline([]int{0, 5, 10}))
	require.Equal(t, "▁▁▁", sparkline([]int{7, 7, 7}))
	require.Empty(t, sparkline(nil))
}
