package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hatchet-dev/hatchet/pkg/config/loader/loaderutils"
	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hatchetServer is the Hatchet server the token names, as the SDK reads
// it: HATCHET_CLIENT_SERVER_URL and HATCHET_CLIENT_TENANT_ID override the
// token's claims.
type hatchetServer struct {
	url, tenantID, token string
}

// Errors of probing Hatchet.
var (
	errHatchetUnreachable = errors.New("Hatchet does not answer")
	errTokenRejected      = errors.New("Hatchet rejects HATCHET_CLIENT_TOKEN")
)

// restartWithToken is what a worker whose token Hatchet rejects tells its
// operator as it exits.
const restartWithToken = "restart the worker with the token of the current server"

// connectHatchet checks HATCHET_CLIENT_TOKEN and makes the SDK client. A
// malformed token is a one-line error naming the variable (the SDK would
// panic on some), and the token never appears in it.
func connectHatchet(getenv func(string) string) (*hatchet.Client, hatchetServer, error) {
	token := getenv("HATCHET_CLIENT_TOKEN")
	if token == "" {
		return nil, hatchetServer{}, errors.New("no Hatchet server: HATCHET_CLIENT_TOKEN is not set")
	}
	claims, err := loaderutils.GetConfFromJWT(token)
	if err != nil {
		return nil, hatchetServer{}, fmt.Errorf("HATCHET_CLIENT_TOKEN is not a Hatchet API token (%v)", err)
	}
	server := hatchetServer{url: claims.ServerURL, tenantID: claims.TenantId, token: token}
	if u := getenv("HATCHET_CLIENT_SERVER_URL"); u != "" {
		server.url = u
	}
	if id := getenv("HATCHET_CLIENT_TENANT_ID"); id != "" {
		server.tenantID = id
	}
	client, err := newSDKClient()
	if err != nil {
		return nil, hatchetServer{}, fmt.Errorf("connecting to Hatchet (HATCHET_CLIENT_*): %w", err)
	}
	return client, server, nil
}

// newSDKClient is hatchet.NewClient, with a panic of the SDK's turned into
// an error.
func newSDKClient() (client *hatchet.Client, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return hatchet.NewClient()
}

// probeTimeout bounds one probe of Hatchet.
const probeTimeout = 3 * time.Second

// probe asks Hatchet's REST API for one workflow with the token: nil when
// it answers, errTokenRejected when it refuses the token, and
// errHatchetUnreachable otherwise.
func (s hatchetServer) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimRight(s.url, "/")+"/api/v1/tenants/"+s.tenantID+"/workflows?limit=1", nil)
	if err != nil {
		return fmt.Errorf("%w: %v", errHatchetUnreachable, err)
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s", errHatchetUnreachable, s.url)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w (%s answers %s: was it started afresh, with new keys?)", errTokenRejected, s.url, resp.Status)
	}
	return fmt.Errorf("%w: %s answers %s", errHatchetUnreachable, s.url, resp.Status)
}

// rejectsToken reports whether a call to Hatchet's gRPC API failed because
// Hatchet does not know the token (Unauthenticated, which the SDK wraps).
func rejectsToken(err error) bool { return status.Code(err) == codes.Unauthenticated }

// watch probes Hatchet every interval until ctx ends or a probe fails, and
// returns that probe's error (nil when ctx ended).
func (s hatchetServer) watch(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.probe(ctx); err != nil && ctx.Err() == nil {
			return err
		}
	}
}

// The first warning that Hatchet does not answer comes this long after the
// wait began; the next ones after twice as long each time, up to
// unreachableRepeatMax between two.
const (
	unreachableFirstWarning = 5 * time.Second
	unreachableRepeatMax    = time.Minute
)

// await probes Hatchet every interval until it answers (nil), rejects the
// token (errTokenRejected) or ctx ends (its error). While Hatchet does not
// answer it says so: within unreachableFirstWarning, then again and again,
// less often as the wait goes on, until it answers.
func (s hatchetServer) await(ctx context.Context, logger *slog.Logger, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	began := time.Now()
	warnAt, gap := began.Add(unreachableFirstWarning), unreachableFirstWarning
	for {
		err := s.probe(ctx)
		if err == nil || errors.Is(err, errTokenRejected) {
			return err
		}
		if now := time.Now(); !now.Before(warnAt) && ctx.Err() == nil {
			logger.WarnContext(ctx, "Hatchet does not answer: the worker waits for it; pushes wait in the outbox "+
				"and expiry timers keep firing", slog.String("waited", now.Sub(began).Round(time.Second).String()),
				slog.Any("error", err))
			gap = min(2*gap, unreachableRepeatMax)
			warnAt = now.Add(gap)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
