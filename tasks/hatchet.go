package tasks

import (
	"fmt"

	hatchet "github.com/hatchet-dev/hatchet/sdks/go"
	"github.com/rs/zerolog"
)

// NewWorker creates the Hatchet worker with every task of the worker
// registered on it. sdkLogger receives the SDK's own logs.
func NewWorker(client *hatchet.Client, name string, deps Deps, sdkLogger *zerolog.Logger) (*hatchet.Worker, error) {
	var workflows []hatchet.WorkflowBase
	w, err := client.NewWorker(name, hatchet.WithWorkflows(workflows...), hatchet.WithLogger(sdkLogger))
	if err != nil {
		return nil, fmt.Errorf("creating the Hatchet worker: %w", err)
	}
	return w, nil
}
