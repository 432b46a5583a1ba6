package main

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The benchmark's receiver (-count-only) only needs the number of spans of a protobuf traces
// request. Unmarshalling it into Go structs cost ~10 µs of CPU per span, on the CPUs the
// benchmarked services share with it; walking the wire format costs a fraction of that and still
// refuses a request that is not well-formed protobuf.

// Field numbers of the OTLP messages walked here (opentelemetry-proto, trace/v1).
const (
	exportRequestResourceSpans protowire.Number = 1 // ExportTraceServiceRequest.resource_spans
	resourceSpansScopeSpans    protowire.Number = 2 // ResourceSpans.scope_spans
	scopeSpansSpans            protowire.Number = 2 // ScopeSpans.spans
)

// countSpans returns the number of spans in a protobuf ExportTraceServiceRequest, checking that
// every message on the way to them, and each span's own fields, are well-formed protobuf.
func countSpans(data []byte) (int, error) {
	spans := 0
	err := walk(data, "ExportTraceServiceRequest", func(n protowire.Number, body []byte) error {
		if n != exportRequestResourceSpans {
			return nil
		}
		return walk(body, "ResourceSpans", func(n protowire.Number, body []byte) error {
			if n != resourceSpansScopeSpans {
				return nil
			}
			return walk(body, "ScopeSpans", func(n protowire.Number, body []byte) error {
				if n != scopeSpansSpans {
					return nil
				}
				spans++
				return walk(body, "Span", nil)
			})
		})
	})
	return spans, err
}

// checkMessage checks that data is well-formed protobuf at its top level (a metrics request in
// -count-only mode, whose content nothing reads).
func checkMessage(data []byte) error { return walk(data, "ExportMetricsServiceRequest", nil) }

// walk goes through the fields of one message, calling onBytes (when not nil) with each
// length-delimited field's number and payload; what names the message in errors.
func walk(data []byte, what string, onBytes func(protowire.Number, []byte) error) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return fmt.Errorf("proto: malformed %s: %w", what, protowire.ParseError(n))
		}
		data = data[n:]
		if typ == protowire.BytesType {
			body, m := protowire.ConsumeBytes(data)
			if m < 0 {
				return fmt.Errorf("proto: malformed %s: %w", what, protowire.ParseError(m))
			}
			data = data[m:]
			if onBytes != nil {
				if err := onBytes(num, body); err != nil {
					return err
				}
			}
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, data)
		if m < 0 {
			return fmt.Errorf("proto: malformed %s: %w", what, protowire.ParseError(m))
		}
		data = data[m:]
	}
	return nil
}
