package tasks

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/bucketworker/bucket-worker/db"
	"github.com/bucketworker/bucket-worker/tasks/benchreport"
)

// BenchmarkWebhookDelivery measures the webhook deliverer (contract §15.2)
// against a local receiver that answers at once:
//   - drain: deliveries per second of BUCKET_BENCH_DELIVERIES (5 000)
//     queued deliveries, next to the same signed bodies posted straight from
//     one Go client with as many requests in flight, in the same run;
//   - drain-20ms: the same, a fifth as many, to a receiver that takes
//     20 ms to answer, as one across a network does;
//   - steady: a running worker's deliverer while joins commit at 200 per
//     second for BUCKET_BENCH_OFFERED_SECONDS (60): the p50 and p99 from
//     each commit to its delivery.
//
// Run it with
//
//	BUCKET_BENCH=1 go test ./tasks -run '^$' -bench WebhookDelivery -benchtime 1x -timeout 30m
func BenchmarkWebhookDelivery(b *testing.B) {
	if os.Getenv("BUCKET_BENCH") == "" {
		b.Skip("set BUCKET_BENCH=1 to run the delivery benchmark")
	}
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	var delay atomic.Int64 // how long the receiver takes to answer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		time.Sleep(time.Duration(delay.Load()))
		mu.Lock()
		arrived[req.Header.Get("webhook-id")] = time.Now()
		mu.Unlock()
	}))
	defer srv.Close()
	r := &receiver{srv: srv, key: bytes.Repeat([]byte{7}, 32)}

	for _, rc := range []struct {
		name  string
		delay time.Duration
		n     int
	}{
		{"drain", 0, envInt(b, "BUCKET_BENCH_DELIVERIES", 5000)},
		// A receiver across a network: both sides wait on it.
		{"drain-20ms", 20 * time.Millisecond, envInt(b, "BUCKET_BENCH_DELIVERIES", 5000) / 5},
	} {
		b.Run(rc.name, func(b *testing.B) {
			delay.Store(int64(rc.delay))
			defer delay.Store(0)
			var deliverer, raw time.Duration
			for range b.N {
				e := newEnv(b, defs{"buckets/pro.yaml": proBucket})
				p := e.webhook("id: crm\nevents: [bucket.entered]", r, 15)
				rows := make([]db.Delivery, rc.n)
				for i := range rows {
					key := fmt.Sprintf("bucket:pro:u%d:entered:1", i)
					body, err := webhookBody("crm", key, "bucket.entered", t0, webhookData{BucketID: "pro", BucketName: "Pro",
						UserID: fmt.Sprintf("u%d", i), Transition: Entered, EntryCount: 1, Source: SourceEvent})
					if err != nil {
						b.Fatal(err)
					}
					rows[i] = db.Delivery{Destination: "crm", UserID: fmt.Sprintf("u%d", i), BucketID: "pro", IdempotencyKey: key, Payload: body}
				}
				if err := db.InsertDeliveries(e.ctx, e.db, slices.Clone(rows), t0); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				got, err := p.Deliver(e.ctx, DeliveryTimeout)
				if err != nil || got != rc.n {
					b.Fatalf("delivered %d of %d: %v", got, rc.n, err)
				}
				deliverer += time.Since(start)
				raw += rawPosts(b, srv.URL, r.secret(), rows)
			}
			benchreport.Rate(b, "deliveries/s", float64(b.N*rc.n), deliverer, raw)
		})
	}

	b.Run("steady", func(b *testing.B) {
		seconds := envInt(b, "BUCKET_BENCH_OFFERED_SECONDS", 60)
		const rate = 200
		for range b.N {
			e := newEnv(b, defs{"buckets/pro.yaml": proBucket})
			p := e.webhook("id: crm\nevents: [bucket.entered]", r, 15)
			ctx, stop := context.WithCancel(e.ctx)
			var running sync.WaitGroup
			running.Go(func() { p.Run(ctx, time.Second) })
			committed := make([]time.Time, rate*seconds)
			tick := time.NewTicker(time.Second / rate)
			var ingests sync.WaitGroup
			for i := range committed {
				<-tick.C
				ingests.Go(func() {
					payload := fmt.Appendf(nil, `{"userId":"s%d","contactProperties":{"plan":"pro"}}`, i)
					if _, err := HandleIngest(e.ctx, e.deps, IngestStore, "app.active", payload, ""); err != nil {
						b.Error(err)
					}
					committed[i] = time.Now()
				})
			}
			tick.Stop()
			ingests.Wait()
			deadline := time.Now().Add(time.Minute)
			for e.count("SELECT count(*) FROM bucket_event_deliveries WHERE delivered_at IS NULL") > 0 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			stop()
			running.Wait()
			var lat []time.Duration
			mu.Lock()
			for i, at := range committed {
				if got, ok := arrived[messageID("crm", fmt.Sprintf("bucket:pro:s%d:entered:1", i))]; ok {
					lat = append(lat, got.Sub(at))
				}
			}
			mu.Unlock()
			if len(lat) != len(committed) {
				b.Fatalf("%d of %d delivered", len(lat), len(committed))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
		}
	})
}

// rawPosts is the drain's baseline: the same bodies, signed, posted to url
// by one client with webhookConcurrency requests in flight.
func rawPosts(b *testing.B, url, secret string, rows []db.Delivery) time.Duration {
	signer, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Timeout: WebhookTimeout}
	slots := make(chan struct{}, webhookConcurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for _, d := range rows {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			id, at := messageID("raw", d.IdempotencyKey), time.Now()
			sig, err := signer.Sign(id, at, d.Payload)
			if err != nil {
				b.Error(err)
				return
			}
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(d.Payload))
			req.Header.Set("content-type", "application/json")
			req.Header.Set("webhook-id", id)
			req.Header.Set("webhook-timestamp", fmt.Sprint(at.Unix()))
			req.Header.Set("webhook-signature", sig)
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	return time.Since(start)
}

func envInt(b testing.TB, key string, fallback int) int {
	if v := os.Getenv(key); v != "" {
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", key, v)
		}
		return n
	}
	return fallback
}
