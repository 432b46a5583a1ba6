package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// OTLP/JSON is protojson with two differences, both handled here:
//   - enums are numbers (protojson option UseEnumNumbers);
//   - traceId, spanId and parentSpanId (spans, links, exemplars) are hex strings,
//     where protojson uses base64 for every bytes field.
// Other bytes fields (e.g. AnyValue.bytesValue) stay base64, as OTLP/JSON says.

var idKeys = map[string]bool{
	"traceId": true, "spanId": true, "parentSpanId": true,
	"trace_id": true, "span_id": true, "parent_span_id": true,
}

// toOTLPJSON encodes msg in OTLP/JSON, with ids as lowercase hex.
func toOTLPJSON(msg proto.Message) (json.RawMessage, error) {
	data, err := protojson.MarshalOptions{UseProtoNames: false, UseEnumNumbers: true}.Marshal(msg)
	if err != nil {
		return nil, err
	}
	return rewriteIDs(data, func(s string) string {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return s
		}
		return hex.EncodeToString(b)
	})
}

// fromOTLPJSON decodes OTLP/JSON (hex ids, camelCase or snake_case keys, enums
// as numbers or names, unknown fields ignored) into msg.
func fromOTLPJSON(data []byte, msg proto.Message) error {
	data, err := rewriteIDs(data, func(s string) string {
		// A 16-byte trace id is 32 hex digits but 24 base64 characters, an 8-byte span
		// id 16 hex digits but 12 base64 characters, so hex is never mistaken for base64.
		if len(s) != 32 && len(s) != 16 {
			return s
		}
		b, err := hex.DecodeString(s)
		if err != nil {
			return s
		}
		return base64.StdEncoding.EncodeToString(b)
	})
	if err != nil {
		return err
	}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, msg)
}

// rewriteIDs applies conv to every string value under an id key, at any depth.
func rewriteIDs(data []byte, conv func(string) string) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep numbers exactly as written
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if s, ok := child.(string); ok && idKeys[k] {
					v[k] = conv(s)
				} else {
					walk(child)
				}
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		}
	}
	walk(v)
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(out.Bytes(), "\n"), nil
}
