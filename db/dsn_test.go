package db

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConnURLReadsKeywordValuePairs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:p@h:5432/d?sslmode=disable", "postgres://u:p@h:5432/d?sslmode=disable"},
		{"host=h port=6543 user=u password=p dbname=d sslmode=disable", "postgres://u:p@h:6543/d?sslmode=disable"},
		{"host = h  dbname=d password='a b\\'c\\\\'", "postgres://:a%20b%27c%5C@h/d"},
		{"host=/var/run/postgresql dbname=d", "postgres:///d?host=%2Fvar%2Frun%2Fpostgresql"},
		{"user=u dbname=d", "postgres://u@/d"},
	} {
		got, err := connURL(tc.dsn)
		require.NoError(t, err, tc.dsn)
		require.Equal(t, tc.want, got, tc.dsn)
	}
	for _, bad := range []string{"host=h password='unclosed", "just-a-word", "=value"} {
		_, err := connURL(bad)
		require.Error(t, err, bad)
	}
}

// TestSecretsOfEveryForm: the password of every form a connection string
// takes, as written and decoded, is masked by Mask and MaskConnString.
func TestSecretsOfEveryForm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dsn     string
		secrets []string // what may never show
	}{
		{"postgres://u:s3cret@h/d", []string{"s3cret"}},
		{"postgres://u:s3%2Fc%40t@h/d", []string{"s3%2Fc%40t", "s3/c@t"}},
		{"postgres://u@h/d?sslmode=bogus&password=s3cret", []string{"s3cret"}},
		{"postgres://u@h/d?password=s3%20cret", []string{"s3%20cret", "s3 cret"}},
		{"host=h password=s3cret sslmode=bogus", []string{"s3cret"}},
		{"host=h password = 's3 c\\'ret' dbname=d", []string{"s3 c'ret", "s3 c\\'ret"}},
		{"password='s3cret'", []string{"s3cret"}},
		{"host=h password='unclosed s3cret", []string{"unclosed s3cret"}},
	} {
		secrets := Secrets(tc.dsn)
		masked := MaskConnString(tc.dsn)
		for _, s := range tc.secrets {
			require.Contains(t, secrets, s, tc.dsn)
			require.NotContains(t, masked, s, tc.dsn)
			require.Equal(t, "error near xxxxx.", Mask("error near "+s+".", secrets), tc.dsn)
		}
		require.Contains(t, masked, "xxxxx", tc.dsn)
	}
}

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
		"host=127.0.0.1 user=bw password=s3cret sslmode=bogus",
		"host=127.0.0.1 password='s3cret dbname=db",
		"host=127.0.0.1 port=notaport password=s3cret",
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
	for _, dsn := range []string{"postgres://bw:s3cret@h:1:2/db", "host=127.0.0.1 port=1 user=s3cret password=s3cret"} {
		_, err := Open(context.Background(), dsn)
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("a connection error shows the password: %v", err)
		}
	}
}
