package buckets

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
)

// DecodeJSON decodes one JSON document the way JavaScript's JSON.parse
// reads it, which is how Hogsend sees the same data (contract §3.1):
// every number becomes the nearest float64, so 9007199254740993 reads as
// 9007199254740992, and a number beyond the double range reads as ±Inf
// instead of failing the whole document. Objects are map[string]any and
// arrays []any.
func DecodeJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("invalid JSON: data after the document")
	}
	return doubles(v), nil
}

// doubles replaces every json.Number in v by its float64.
func doubles(v any) any {
	switch v := v.(type) {
	case json.Number:
		return Double(string(v))
	case map[string]any:
		for k, item := range v {
			v[k] = doubles(item)
		}
	case []any:
		for i, item := range v {
			v[i] = doubles(item)
		}
	}
	return v
}

// Double is the float64 JavaScript reads from the JSON number text: the
// nearest double, ±Inf beyond the range. text must be a JSON number.
func Double(text string) float64 {
	f, _ := strconv.ParseFloat(text, 64) // out of range: ±Inf with ErrRange
	return f
}

// DecodeProperties decodes a properties document (a contact's properties,
// an event's properties) with DecodeJSON. A document that is not a JSON
// object reads as no properties.
func DecodeProperties(data []byte) Properties {
	v, err := DecodeJSON(data)
	if obj, ok := v.(map[string]any); ok && err == nil {
		return obj
	}
	return Properties{}
}
