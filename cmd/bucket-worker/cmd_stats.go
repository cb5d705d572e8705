package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bucketworker/bucket-worker/db"
)

type statsOutput struct {
	Period  string        `json:"period"`
	Since   string        `json:"since"` // the start of the first period
	Buckets []statsBucket `json:"buckets"`
}

type statsBucket struct {
	BucketID     string       `json:"bucketId"`
	Size         int          `json:"size"`
	Entered      int          `json:"entered"`
	Left         int          `json:"left"`
	AvgDwellSecs *float64     `json:"avgDwellSecs"`
	Series       []statsPoint `json:"series"`
}

type statsPoint struct {
	At      string `json:"at"`
	Entered int    `json:"entered"`
	Left    int    `json:"left"`
	Size    int    `json:"size"`
}

// statsPeriods are the periods of stats, with how many of them it shows
// by default.
var statsPeriods = map[string]int{"hour": 24, "day": 14, "week": 12}

// runStats prints, per bucket, its size, the memberships it started and
// ended, their average dwell, and a series of periods (contract §16) from
// the membership rows.
func runStats(ctx context.Context, env *environment, args []string) error {
	fs := env.newFlagSet("stats")
	bucketID := fs.String("bucket", "", "only this bucket")
	period := fs.String("period", "day", "hour, day or week (in UTC)")
	sinceFlag := fs.String("since", "", "the first period holds this instant, RFC 3339 (default: 24 hours, 14 days or 12 weeks back)")
	asJSON := fs.Bool("json", false, "print one JSON document")
	if err := parse(fs, args); err != nil {
		return err
	}
	periods, ok := statsPeriods[*period]
	if !ok {
		return usageError{fmt.Sprintf("--period %q: use hour, day or week", *period)}
	}
	now := time.Now().UTC()
	since := now.Add(-time.Duration(periods-1) * map[string]time.Duration{"hour": time.Hour, "day": 24 * time.Hour, "week": 7 * 24 * time.Hour}[*period])
	if *sinceFlag != "" {
		t, err := time.Parse(time.RFC3339, *sinceFlag)
		if err != nil || t.After(now) {
			return usageError{fmt.Sprintf("--since %q: want an RFC 3339 instant that is not in the future", *sinceFlag)}
		}
		since = t
	}
	defs, conn, err := openDefinitions(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	var ids []string
	for _, b := range defs.buckets {
		if *bucketID == "" || b.ID == *bucketID {
			ids = append(ids, b.ID)
		}
	}
	if *bucketID != "" && len(ids) == 0 {
		return usageError{fmt.Sprintf("--bucket %q: no bucket has that id", *bucketID)}
	}
	trends, err := db.Trends(ctx, conn, ids, *period, since, now)
	if err != nil {
		return err
	}
	out := statsOutput{Period: *period, Since: since.Format(time.RFC3339), Buckets: make([]statsBucket, len(trends))}
	if len(trends) > 0 && len(trends[0].Series) > 0 {
		out.Since = trends[0].Series[0].At.UTC().Format(time.RFC3339) // the start of the first period
	}
	for i, t := range trends {
		b := statsBucket{BucketID: t.BucketID, Size: t.Size, Entered: t.Entered, Left: t.Left, AvgDwellSecs: t.AvgDwellSecs,
			Series: make([]statsPoint, len(t.Series))}
		for j, p := range t.Series {
			b.Series[j] = statsPoint{At: p.At.UTC().Format(time.RFC3339), Entered: p.Entered, Left: p.Left, Size: p.Size}
		}
		out.Buckets[i] = b
	}
	if *asJSON {
		return writeJSON(env.stdout, out)
	}
	fmt.Fprintf(env.stdout, "by %s from %s (UTC); SIZE OVER TIME is the size at the end of each %s\n\n", *period, out.Since, *period)
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BUCKET\tSIZE\tENTERED\tLEFT\tAVG DWELL\tSIZE OVER TIME\tIN\tOUT")
	for _, b := range out.Buckets {
		sizes := make([]int, len(b.Series))
		in, gone := 0, 0
		for i, p := range b.Series {
			sizes[i] = p.Size
			in += p.Entered
			gone += p.Left
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t+%d\t-%d\n", b.BucketID, b.Size, b.Entered, b.Left, dwellText(b.AvgDwellSecs), sparkline(sizes), in, gone)
	}
	return tw.Flush()
}

// dwellText is an average dwell as a person reads it: "3d 4h", "12m".
func dwellText(secs *float64) string {
	if secs == nil {
		return "—"
	}
	d := time.Duration(*secs) * time.Second
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd %dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// sparkline draws values with the eight block characters, scaled from the
// smallest to the largest; a flat series is a flat line.
func sparkline(values []int) string {
	if len(values) == 0 {
		return ""
	}
	const ticks = "▁▂▃▄▅▆▇█"
	blocks := []rune(ticks)
	lo, hi := slices.Min(values), slices.Max(values)
	var sb strings.Builder
	for _, v := range values {
		i := 0
		if hi > lo {
			i = (v - lo) * (len(blocks) - 1) / (hi - lo)
		}
		sb.WriteRune(blocks[i])
	}
	return sb.String()
}
