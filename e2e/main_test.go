//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// e2eStack is the environment of the Hatchet server the package's tests
// run against: one of their own, started afresh for the run on ports of
// its own, so that the developer's Hatchet (scripts/stack) and its
// dashboard show only what the developer did.
var e2eStack = []string{
	"HATCHET_DB=hatchet_e2e", "HATCHET_API_PORT=18280", "HATCHET_GRPC_PORT=17277", "HATCHET_HEALTH_PORT=18933",
	"HATCHET_FRONTEND_PORT=18281", "HATCHET_RUNTIME_PORT=18282",
}

func TestMain(m *testing.M) {
	dir, err := filepath.Abs("../.stack/e2e-hatchet")
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	stackEnv = append(append(os.Environ(), "STACK_DIR="+dir), e2eStack...)
	if err := stack("reset"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: starting the tests' Hatchet:", err)
		os.Exit(1)
	}
	vars, err := readEnvFile(filepath.Join(dir, "worker.env"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	for _, k := range []string{"HATCHET_CLIENT_TOKEN", "HATCHET_API_URL", "HATCHET_TENANT_ID", "HATCHET_DASHBOARD_URL"} {
		os.Setenv(k, vars[k])
	}
	code := m.Run()
	if err := stack("down"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: stopping the tests' Hatchet:", err)
	}
	os.Exit(code)
}

// stackEnv is the environment of scripts/stack for the tests' Hatchet.
var stackEnv []string

// stack runs scripts/stack with the verb on the tests' Hatchet.
func stack(verb string) error {
	cmd := exec.Command("../scripts/stack", verb)
	cmd.Env, cmd.Stdout, cmd.Stderr = stackEnv, os.Stderr, os.Stderr
	return cmd.Run()
}

// readEnvFile reads the KEY=value lines of an environment file.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if k, v, ok := strings.Cut(scanner.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env, scanner.Err()
}
