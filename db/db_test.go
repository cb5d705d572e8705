package db

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestInvalidURLsHideThePassword: whatever is wrong with a database URL,
// the error names the problem and never the password.
func TestInvalidURLsHideThePassword(t *testing.T) {
	t.Parallel()
	for _, url := range []string{
		"postgres://bw:s3cret@127.0.0.1:notaport/db",
		"postgres://bw:s3cret@[::1/db",
		"mysql://bw:s3cret@host/db",
		"postgres://bw:s3cret@127.0.0.1:5432/db?connect_timeout=abc",
		"postgres://bw:s3/c#r:et@host/db",
		"postgres://bw@127.0.0.1:notaport/db?password=s3cret",
	} {
		_, err := Open(context.Background(), url)
		if err == nil || !errors.Is(err, ErrInvalidURL) {
			t.Fatalf("%s: got %v, want an invalid URL error", url, err)
		}
		for _, secret := range []string{"s3cret", "s3/c#r:et"} {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error shows the password: %v", err)
			}
		}
		if !strings.Contains(err.Error(), "xxxxx") {
			t.Fatalf("the error should show the URL, masked: %v", err)
		}
	}
	_, err := Open(context.Background(), "postgres://bw:s3cret@h:1:2/db")
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("a connection error shows the password: %v", err)
	}
}
