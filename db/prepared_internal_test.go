package db

import (
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/uptrace/bun/dialect/pgdialect"
)

// TestNamedColumnsAreTheModels: the statements the connections prepare
// name their columns (contactColumns); each list is its model's, so that
// a row reads back whole.
func TestNamedColumnsAreTheModels(t *testing.T) {
	tables := pgdialect.New().Tables()
	for _, c := range []struct {
		columns string
		model   reflect.Type
	}{
		{contactColumns, reflect.TypeFor[Contact]()},
	} {
		table := tables.Get(c.model)
		var want []string
		for _, f := range table.Fields {
			want = append(want, string(table.Alias)+"."+f.Name)
		}
		require.Equal(t, want, strings.Split(c.columns, ", "), "%s", c.model)
	}
}

// TestArraysText is the text form of arrays the statements with
// parameters send (their values, read back by PostgreSQL, are in
// TestParametersCarryAnyText).
func TestArraysText(t *testing.T) {
	require.Equal(t, `{}`, textArray(nil))
	require.Equal(t, `{"a","","b\"c","d\\e","{f,g}"}`, textArray([]string{"a", "", `b"c`, `d\e`, "{f,g}"}))
	require.Equal(t, `{-1,0,7}`, intArray([]int32{-1, 0, 7}))
	require.Equal(t, `{t,f}`, boolArray([]bool{true, false}))
}
