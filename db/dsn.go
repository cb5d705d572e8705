package db

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// A connection string comes in either form Postgres documents for libpq:
// a URL, postgres://user:password@host:port/dbname?param=value, or
// keyword/value pairs, host=h port=5432 user=u password='p w' dbname=d,
// with a value single-quoted when it holds spaces and \' and \\ escaped in
// it. The driver reads URLs only; connURL turns the pairs into one.

// connURL returns the URL the driver reads for a connection string of
// either form. Keywords other than host, hostaddr, port, user, password
// and dbname become query parameters, as the URL form writes them.
func connURL(dsn string) (string, error) {
	if strings.Contains(dsn, "://") || strings.TrimSpace(dsn) == "" {
		return dsn, nil
	}
	pairs, err := keywordPairs(dsn)
	if err != nil {
		return "", err
	}
	u := &url.URL{Scheme: "postgres"}
	q := url.Values{}
	var user, password, host, port string
	var hasPassword bool
	for _, p := range pairs {
		switch p.key {
		case "host", "hostaddr":
			host = p.value
		case "port":
			port = p.value
		case "user":
			user = p.value
		case "password":
			password, hasPassword = p.value, true
		case "dbname":
			u.Path = "/" + p.value
		default:
			q.Set(p.key, p.value)
		}
	}
	switch {
	case strings.HasPrefix(host, "/"): // a Unix socket's directory
		q.Set("host", host)
	case host != "" && port != "":
		u.Host = net.JoinHostPort(host, port)
	case host != "":
		u.Host = host
	case port != "":
		u.Host = net.JoinHostPort("localhost", port)
	}
	switch {
	case hasPassword:
		u.User = url.UserPassword(user, password)
	case user != "":
		u.User = url.User(user)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

type keywordPair struct{ key, value string }

// keywordPairs reads the pairs of a keyword/value connection string.
func keywordPairs(dsn string) ([]keywordPair, error) {
	var pairs []keywordPair
	s := dsn
	for {
		s = strings.TrimLeft(s, " \t\n\r")
		if s == "" {
			return pairs, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%q is not keyword=value", firstWord(s))
		}
		key := strings.TrimSpace(s[:eq])
		if strings.ContainsAny(key, " \t") {
			return nil, fmt.Errorf("%q is not keyword=value", firstWord(s))
		}
		s = strings.TrimLeft(s[eq+1:], " \t")
		var value strings.Builder
		quoted := strings.HasPrefix(s, "'")
		if quoted {
			s = s[1:]
		}
		closed := !quoted
		i := 0
		for ; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '\\' && i+1 < len(s):
				i++
				value.WriteByte(s[i])
				continue
			case quoted && c == '\'':
				closed = true
			case !quoted && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			default:
				value.WriteByte(c)
				continue
			}
			break
		}
		if !closed {
			return nil, fmt.Errorf("the value of %s has no closing quote", key)
		}
		pairs = append(pairs, keywordPair{key, value.String()})
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
}

func firstWord(s string) string {
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i]
	}
	return s
}

// passwordParam matches a password query parameter and its value.
var passwordParam = regexp.MustCompile(`([?&]password=)([^&#]*)`)

// passwordKeyword matches a password keyword/value pair and its value,
// quoted or not.
var passwordKeyword = regexp.MustCompile(`((?:^|\s)password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)

// MaskConnString is the connection string with its password replaced by
// xxxxx wherever it may be written: the user info of a URL (everything
// between the first colon after the scheme and the last @, since a
// malformed URL may hold anything there), a password query parameter, a
// password keyword, quoted or not.
func MaskConnString(dsn string) string {
	if scheme := strings.Index(dsn, "://"); scheme >= 0 {
		rest := dsn[scheme+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				dsn = dsn[:scheme+3] + rest[:colon+1] + "xxxxx" + rest[at:]
			}
		}
		return passwordParam.ReplaceAllString(dsn, "${1}xxxxx")
	}
	return passwordKeyword.ReplaceAllString(dsn, "${1}xxxxx")
}

// Secrets returns the passwords a connection string holds, each as it is
// written and as it decodes, longest first: what must never appear in an
// error or a log line (Mask takes them out).
func Secrets(dsn string) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	addEncoded := func(s string) {
		add(s)
		if d, err := url.PathUnescape(s); err == nil {
			add(d)
		}
		if d, err := url.QueryUnescape(s); err == nil {
			add(d)
		}
	}
	if scheme := strings.Index(dsn, "://"); scheme >= 0 {
		rest := dsn[scheme+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				addEncoded(rest[colon+1 : at])
			}
		}
		for _, m := range passwordParam.FindAllStringSubmatch(dsn, -1) {
			addEncoded(m[2])
		}
	} else {
		for _, m := range passwordKeyword.FindAllStringSubmatch(dsn, -1) {
			add(m[2])
			if unquoted, err := keywordPairs("password=" + m[2]); err == nil && len(unquoted) == 1 {
				add(unquoted[0].value)
			}
			add(strings.Trim(m[2], "'"))
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// Mask replaces every secret in s by xxxxx.
func Mask(s string, secrets []string) string {
	for _, secret := range secrets {
		s = strings.ReplaceAll(s, secret, "xxxxx")
	}
	return s
}
