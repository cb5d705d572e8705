// Package definition reads definition files — the YAML or JSON files of
// buckets and journeys, each one object or a list of objects — into nodes
// whose decoding records every problem with its file and path in a Report,
// within limits a hostile file cannot exceed (contract §2). It also holds
// what bucket and journey definitions share: the id format and the
// ENABLED_* selections.
package definition

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a definition file: the file, the path inside it
// (criteria.within.hours, [1].trigger.event) and what is wrong.
type Error struct {
	File    string `json:"file"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Error formats the problem as "file: path: message".
func (e Error) Error() string {
	switch {
	case e.Path == "":
		return e.File + ": " + e.Message
	default:
		return e.File + ": " + e.Path + ": " + e.Message
	}
}

// Errors is every problem found in one load. A load reports all of them,
// never just the first.
type Errors []Error

// Error joins the problems, one a line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Report collects the errors and warnings of a load.
type Report struct {
	Errors   Errors
	Warnings Errors
}

func (r *Report) errorf(file, p, format string, args ...any) {
	r.Errors = append(r.Errors, Error{File: file, Path: p, Message: fmt.Sprintf(format, args...)})
}

func (r *Report) warnf(file, p, format string, args ...any) {
	r.Warnings = append(r.Warnings, Error{File: file, Path: p, Message: fmt.Sprintf(format, args...)})
}

// Err returns the collected errors, or nil when there are none.
func (r *Report) Err() error {
	if len(r.Errors) == 0 {
		return nil
	}
	return r.Errors
}

// Node is one value of a definition file together with where it sits, so
// that every problem found while decoding it can name its file and path.
// Decoding methods record problems in the Report and carry on.
type Node struct {
	y      *yaml.Node
	file   string
	path   string
	report *Report
}

// ReadDir parses every *.yaml, *.yml and *.json file directly in dir of fsys,
// in lexical order, and returns one Node per definition: a file holds one
// object or a list of objects. A missing dir yields no definitions.
func ReadDir(fsys fs.FS, dir string, report *Report) []*Node {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			report.errorf(dir, "", "reading folder: %v", err)
		}
		return nil
	}
	var nodes []*Node
	for _, entry := range entries { // fs.ReadDir sorts by name
		name := entry.Name()
		ext := path.Ext(name)
		if entry.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		file := path.Join(dir, name)
		nodes = append(nodes, readFile(fsys, file, ext, report)...)
	}
	return nodes
}

// The limits a definition file must stay within (contract §2): a file
// comes from a repository, but a bad one must not take the worker down.
const (
	// MaxFileSize is the largest definition file read.
	MaxFileSize = 10 << 20
	// maxAliasNodes is how many nodes YAML aliases may add to a file's own
	// when they are expanded: a sub-kilobyte "billion laughs" file would
	// otherwise expand to billions.
	maxAliasNodes = 100_000
)

func readFile(fsys fs.FS, file, ext string, report *Report) []*Node {
	if info, err := fs.Stat(fsys, file); err == nil && info.Size() > MaxFileSize {
		report.errorf(file, "", "the file has %d bytes; a definition file may have at most %d (10 MB)", info.Size(), MaxFileSize)
		return nil
	}
	data, err := fs.ReadFile(fsys, file)
	if err != nil {
		report.errorf(file, "", "reading file: %v", err)
		return nil
	}
	if ext == ".json" && !json.Valid(data) {
		var v any
		err := json.Unmarshal(data, &v)
		report.errorf(file, "", "invalid JSON: %v", err)
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		report.errorf(file, "", "invalid YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil
	}
	var second yaml.Node
	if err := dec.Decode(&second); !errors.Is(err, io.EOF) {
		at := ""
		if err == nil {
			at = fmt.Sprintf(" (the second starts at line %d)", second.Line)
		}
		report.errorf(file, "", "the file holds more than one YAML document%s: a file holds one object or one list of objects", at)
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		report.warnf(file, "", "file is empty")
		return nil
	}
	if err := checkAliases(&doc); err != nil {
		report.errorf(file, "", "%v", err)
		return nil
	}
	root := &Node{y: resolveAlias(doc.Content[0]), file: file, report: report}
	switch root.y.Kind {
	case yaml.MappingNode:
		return []*Node{root}
	case yaml.SequenceNode:
		items := make([]*Node, 0, len(root.y.Content))
		for i := range root.y.Content {
			items = append(items, root.index(i))
		}
		return items
	default:
		root.Errorf("must be an object or a list of objects")
		return nil
	}
}

// checkAliases rejects the alias structures that would make decoding the
// document loop or explode: an alias inside the node it refers to, and
// aliases that expand to more than maxAliasNodes nodes beyond the
// document's own. It walks the nodes without copying any.
func checkAliases(doc *yaml.Node) error {
	own := 0
	var count func(n *yaml.Node)
	count = func(n *yaml.Node) {
		own++
		if n.Kind != yaml.AliasNode {
			for _, c := range n.Content {
				count(c)
			}
		}
	}
	count(doc)
	budget := own + maxAliasNodes
	visited := 0
	open := map[*yaml.Node]bool{} // the anchored nodes being expanded
	var visit func(n *yaml.Node) error
	visit = func(n *yaml.Node) error {
		if visited++; visited > budget {
			return fmt.Errorf("YAML aliases expand to more than %d nodes beyond the file's own %d", maxAliasNodes, own)
		}
		if n.Kind == yaml.AliasNode {
			if n.Alias == nil {
				return nil
			}
			if open[n.Alias] {
				return fmt.Errorf("line %d: the alias *%s is inside the node it refers to", n.Line, n.Value)
			}
			return visit(n.Alias)
		}
		if n.Anchor != "" {
			open[n] = true
			defer delete(open, n)
		}
		for _, c := range n.Content {
			if err := visit(c); err != nil {
				return err
			}
		}
		return nil
	}
	return visit(doc)
}

// jsonNumber is the syntax of a JSON number.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

func resolveAlias(y *yaml.Node) *yaml.Node {
	for y.Kind == yaml.AliasNode && y.Alias != nil {
		y = y.Alias
	}
	return y
}

// File is the file the node comes from.
func (n *Node) File() string { return n.file }

// Path is the node's path inside its file.
func (n *Node) Path() string { return n.path }

// Missing records that the object at this node lacks a required key, at
// the key's own path (criteria, [1].criteria).
func (n *Node) Missing(key string) {
	n.At(key).Errorf("is required")
}

// At is the place of the node's key, for reporting a problem there.
func (n *Node) At(key string) *Node {
	return n.child(key, n.y)
}

// Errorf records a problem at this node.
func (n *Node) Errorf(format string, args ...any) {
	n.report.errorf(n.file, n.path, format, args...)
}

// Warnf records a warning at this node.
func (n *Node) Warnf(format string, args ...any) {
	n.report.warnf(n.file, n.path, format, args...)
}

func (n *Node) child(key string, y *yaml.Node) *Node {
	p := key
	if n.path != "" {
		p = n.path + "." + key
	}
	return &Node{y: resolveAlias(y), file: n.file, path: p, report: n.report}
}

func (n *Node) index(i int) *Node {
	return &Node{y: resolveAlias(n.y.Content[i]), file: n.file, path: fmt.Sprintf("%s[%d]", n.path, i), report: n.report}
}

// Fields checks that the node is an object whose keys are all in known,
// records every unknown or repeated key, and returns the known fields. ok is
// false when the node is not an object at all.
func (n *Node) Fields(known ...string) (fields map[string]*Node, ok bool) {
	if n.y.Kind != yaml.MappingNode {
		n.Errorf("must be an object")
		return nil, false
	}
	fields = make(map[string]*Node, len(n.y.Content)/2)
	for i := 0; i+1 < len(n.y.Content); i += 2 {
		k, v := n.y.Content[i], n.y.Content[i+1]
		key := k.Value
		field := n.child(key, v)
		if k.Kind != yaml.ScalarNode {
			n.Errorf("keys must be strings")
			continue
		}
		if _, dup := fields[key]; dup {
			field.Errorf("repeated key")
			continue
		}
		if !slices.Contains(known, key) {
			field.Errorf("unknown key %q", key)
			continue
		}
		fields[key] = field
	}
	return fields, true
}

// IsNull reports whether the node is an explicit null.
func (n *Node) IsNull() bool {
	return n.y.Kind == yaml.ScalarNode && n.y.ShortTag() == "!!null"
}

// String decodes a string.
func (n *Node) String() (string, bool) {
	if n.y.Kind != yaml.ScalarNode || n.y.ShortTag() != "!!str" {
		n.Errorf("must be a string")
		return "", false
	}
	return n.y.Value, true
}

// Bool decodes a boolean.
func (n *Node) Bool() (bool, bool) {
	var b bool
	if n.y.Kind != yaml.ScalarNode || n.y.ShortTag() != "!!bool" || n.y.Decode(&b) != nil {
		n.Errorf("must be true or false")
		return false, false
	}
	return b, true
}

// Int decodes a whole number.
func (n *Node) Int() (int64, bool) {
	var i int64
	if n.y.Kind == yaml.ScalarNode && n.y.ShortTag() == "!!int" && n.y.Decode(&i) == nil {
		return i, true
	}
	// JSON writes whole numbers such as 10.0 the way YAML reads as floats.
	var f float64
	if n.y.Kind == yaml.ScalarNode && n.y.ShortTag() == "!!float" && n.y.Decode(&f) == nil &&
		f == float64(int64(f)) {
		return int64(f), true
	}
	n.Errorf("must be a whole number")
	return 0, false
}

// Scalar decodes a JSON scalar: a string, a number (float64, the nearest
// double; a number beyond the double range is ±Inf, as JavaScript reads
// it) or a boolean. Null, NaN, objects and lists are errors.
func (n *Node) Scalar() (any, bool) {
	if n.y.Kind == yaml.ScalarNode {
		switch n.y.ShortTag() {
		case "!!str":
			// YAML resolves a plain number it cannot hold in a float64, such
			// as 1e309, as a string; JSON and JavaScript read it as ±Infinity.
			if n.y.Style == 0 && jsonNumber.MatchString(n.y.Value) {
				f, _ := strconv.ParseFloat(n.y.Value, 64) // ±Inf with ErrRange, as JavaScript reads it
				return f, true
			}
			return n.y.Value, true
		case "!!bool":
			var b bool
			if n.y.Decode(&b) == nil {
				return b, true
			}
		case "!!int", "!!float":
			var f float64
			if n.y.Decode(&f) == nil && !math.IsNaN(f) {
				return f, true
			}
		}
	}
	n.Errorf("must be a string, a number or a boolean")
	return nil, false
}

// List returns the items of a list.
func (n *Node) List() ([]*Node, bool) {
	if n.y.Kind != yaml.SequenceNode {
		n.Errorf("must be a list")
		return nil, false
	}
	items := make([]*Node, len(n.y.Content))
	for i := range n.y.Content {
		items[i] = n.index(i)
	}
	return items, true
}

// IsList reports whether the node is a list.
func (n *Node) IsList() bool { return n.y.Kind == yaml.SequenceNode }

// Any decodes the node into a plain Go value; used for keys that are
// accepted and ignored.
func (n *Node) Any() any {
	var v any
	_ = n.y.Decode(&v)
	return v
}

// ScalarString returns the node's text when it is a string, recording nothing.
func (n *Node) ScalarString() (string, bool) {
	if n.y.Kind == yaml.ScalarNode && n.y.ShortTag() == "!!str" {
		return n.y.Value, true
	}
	return "", false
}

// PeekFields returns the fields of an object without checking them or
// recording anything; ok is false when the node is not an object.
func (n *Node) PeekFields() (map[string]*Node, bool) {
	if n.y.Kind != yaml.MappingNode {
		return nil, false
	}
	fields := make(map[string]*Node, len(n.y.Content)/2)
	for i := 0; i+1 < len(n.y.Content); i += 2 {
		fields[n.y.Content[i].Value] = n.child(n.y.Content[i].Value, n.y.Content[i+1])
	}
	return fields, true
}
