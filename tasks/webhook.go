package tasks

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/bucketworker/bucket-worker/buckets/destination"
	"github.com/bucketworker/bucket-worker/db"
)

// WebhookTimeout bounds one webhook request (contract §15.2).
const WebhookTimeout = 10 * time.Second

// webhookConcurrency is how many requests a webhook sender has in flight:
// the deliveries of one round belong to different (user, bucket)
// subjects, whose order does not bind each other.
const webhookConcurrency = 8

// WebhookSender signs and posts the deliveries of one webhook destination
// (contract §15.2) per the Standard Webhooks specification.
type WebhookSender struct {
	destination *destination.Webhook
	signer      *standardwebhooks.Webhook
	client      *http.Client
}

// ErrInvalidSecret is returned for a webhook secret that is not
// "whsec_" and base64; the message names the variable, never the value.
var ErrInvalidSecret = errors.New("invalid webhook secret")

// NewWebhookSender returns the sender of the destination, which signs
// with secret, the value of its secretEnv. It stamps and signs with the
// wall clock, which receivers check against theirs.
func NewWebhookSender(w *destination.Webhook, secret string) (*WebhookSender, error) {
	if secret == "" {
		return nil, fmt.Errorf("%w: destination %s: %s is not set (it holds the signing secret, whsec_ and base64)", ErrInvalidSecret, w.ID, w.SecretEnv)
	}
	if !strings.HasPrefix(secret, "whsec_") {
		return nil, fmt.Errorf("%w: destination %s: %s must hold whsec_ and the base64 of the secret", ErrInvalidSecret, w.ID, w.SecretEnv)
	}
	signer, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("%w: destination %s: %s must hold whsec_ and the base64 of the secret", ErrInvalidSecret, w.ID, w.SecretEnv)
	}
	return &WebhookSender{destination: w, signer: signer, client: &http.Client{Timeout: WebhookTimeout}}, nil
}

// Send posts each delivery's body, signed, a few at a time; a 2xx is
// delivered, anything else is an error to retry.
func (s *WebhookSender) Send(ctx context.Context, deliveries []db.Delivery) []error {
	errs := make([]error, len(deliveries))
	slots := make(chan struct{}, webhookConcurrency)
	var wg sync.WaitGroup
	for i, d := range deliveries {
		slots <- struct{}{}
		if ctx.Err() != nil {
			<-slots
			errs[i] = ErrNotSent
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			_, errs[i] = s.post(ctx, messageID(s.destination.ID, d.IdempotencyKey), d.Payload)
		})
	}
	wg.Wait()
	return errs
}

// Test posts one signed webhook.test event and returns the status the
// destination answered.
func (s *WebhookSender) Test(ctx context.Context) (int, error) {
	id := "msg_" + rand.Text()
	body, err := webhookBody(s.destination.ID, id, destination.EventTest, time.Now(), map[string]string{"destinationId": s.destination.ID})
	if err != nil {
		return 0, err
	}
	return s.post(ctx, messageID(s.destination.ID, id), body)
}

// post sends one body with the Standard Webhooks headers, signed at the
// time of sending, and returns the status.
func (s *WebhookSender) post(ctx context.Context, id string, body []byte) (int, error) {
	at := time.Now()
	signature, err := s.signer.Sign(id, at, body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.destination.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set(standardwebhooks.HeaderWebhookID, id)
	req.Header.Set(standardwebhooks.HeaderWebhookTimestamp, fmt.Sprint(at.Unix()))
	req.Header.Set(standardwebhooks.HeaderWebhookSignature, signature)
	resp, err := s.client.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap() // without the URL, which may name a token
		}
		return 0, fmt.Errorf("posting to %s: %w", s.destination.ID, err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("%s answered %s: %s", s.destination.ID, resp.Status, strings.TrimSpace(string(snippet)))
	}
	return resp.StatusCode, nil
}
