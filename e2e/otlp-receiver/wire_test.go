package main

import (
	"math/rand"
	"testing"

	"google.golang.org/protobuf/proto"

	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	resource "go.opentelemetry.io/proto/otlp/resource/v1"
	trace "go.opentelemetry.io/proto/otlp/trace/v1"
)

// request builds a traces request with random resources, scopes and spans (attributes, events
// and schema URLs included, so the walk has fields to skip at every level).
func request(rng *rand.Rand) (*colltrace.ExportTraceServiceRequest, int) {
	req := &colltrace.ExportTraceServiceRequest{}
	total := 0
	for r := rng.Intn(4); r > 0; r-- {
		rs := &trace.ResourceSpans{
			Resource:  &resource.Resource{Attributes: []*common.KeyValue{{Key: "service.name", Value: &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: "svc"}}}}},
			SchemaUrl: "https://opentelemetry.io/schemas/1.26.0",
		}
		for s := rng.Intn(3); s > 0; s-- {
			ss := &trace.ScopeSpans{Scope: &common.InstrumentationScope{Name: "rbinder", Version: "0.1.0"}, SchemaUrl: "x"}
			for n := rng.Intn(50); n > 0; n-- {
				span := &trace.Span{
					TraceId:           make([]byte, 16),
					SpanId:            make([]byte, 8),
					Name:              "GET",
					Kind:              trace.Span_SPAN_KIND_SERVER,
					StartTimeUnixNano: rng.Uint64(),
					EndTimeUnixNano:   rng.Uint64(),
					Attributes:        []*common.KeyValue{{Key: "http.response.status_code", Value: &common.AnyValue{Value: &common.AnyValue_IntValue{IntValue: 200}}}},
					Events:            []*trace.Span_Event{{Name: "e", TimeUnixNano: 1}},
				}
				rng.Read(span.TraceId)
				rng.Read(span.SpanId)
				ss.Spans = append(ss.Spans, span)
				total++
			}
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		req.ResourceSpans = append(req.ResourceSpans, rs)
	}
	return req, total
}

func TestCountSpansMatchesTheDecodedRequest(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 200; i++ {
		req, want := request(rng)
		data, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := countSpans(data)
		if err != nil || got != want {
			t.Fatalf("request %d: countSpans = %d, %v; want %d", i, got, err, want)
		}
	}
}

func TestCountSpansRefusesWhatUnmarshalRefuses(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	refused := 0
	for i := 0; i < 200; i++ {
		req, _ := request(rng)
		data, _ := proto.Marshal(req)
		if len(data) < 2 {
			continue
		}
		cut := data[:1+rng.Intn(len(data)-1)] // a truncated request
		decoded := proto.Unmarshal(cut, &colltrace.ExportTraceServiceRequest{})
		_, err := countSpans(cut)
		// The walk checks every message down to the spans' own fields, Unmarshal everything: what
		// the walk refuses, Unmarshal refuses too.
		if err != nil && decoded == nil {
			t.Fatalf("request %d cut at %d: countSpans refused (%v) what Unmarshal took", i, len(cut), err)
		}
		if err != nil {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("no truncated request was refused")
	}
	if _, err := countSpans([]byte{0x0a, 0x05, 0x12}); err == nil {
		t.Fatal("a length past the end was accepted")
	}
	if err := checkMessage([]byte{0xff}); err == nil {
		t.Fatal("a truncated tag was accepted")
	}
}
