// One span record as the OTLP protobuf `Span` message (opentelemetry/proto/trace/v1/trace.proto),
// encoded exactly as the OpenTelemetry JS SDK's own serializer (@opentelemetry/otlp-transformer)
// encodes the span that tracer/src/export/spans.ts makes of the same record: same attributes in
// the same order, same field order, same defaults written. JS puts these bytes into the export
// request (tracer/src/export/otlp-serializer.ts) instead of serializing the span again; the SDK
// still does the transport. Why: docs/decisions/0005-native-span-encoding.md. The tests check the
// bytes against the SDK's serializer (tracer/src/export/otlp-serializer.test.ts).
#pragma once

#include <cstdint>
#include <string>

#include "engine/tracker.h"

namespace rbinder::otlp {

// Appends the Span message body (no tag, no length) to `out` and returns true; or returns false
// with `out` unchanged when this record needs what only JS does the same way (a request-target
// in absolute form, which JS parses with the WHATWG URL parser; a string that is not valid UTF-8,
// which JS decodes with replacement characters; a port-0 address that may or may not be an IP).
// JS then serializes that span with the SDK as before.
bool encode_span(const SpanRecord& span, std::string& out);

// True when `s` is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(const std::string& s);

}  // namespace rbinder::otlp
