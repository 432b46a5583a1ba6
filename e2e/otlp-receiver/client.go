package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/protobuf/proto"

	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	metrics "go.opentelemetry.io/proto/otlp/metrics/v1"
	resource "go.opentelemetry.io/proto/otlp/resource/v1"
	trace "go.opentelemetry.io/proto/otlp/trace/v1"
)

// The fixed content of the test requests; support.test.ts asserts on it.
const testStart = 1700000000000000000 // ns since the epoch

func testResource() *resource.Resource {
	return &resource.Resource{Attributes: []*common.KeyValue{str("service.name", "otlp-receiver-test")}}
}

func testScope() *common.InstrumentationScope {
	return &common.InstrumentationScope{Name: "rbinder.test", Version: "1.0"}
}

func testTraces() *colltrace.ExportTraceServiceRequest {
	span := &trace.Span{
		TraceId:           []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanId:            []byte{0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18},
		ParentSpanId:      []byte{0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28},
		Name:              "GET /test",
		Kind:              trace.Span_SPAN_KIND_SERVER,
		StartTimeUnixNano: testStart,
		EndTimeUnixNano:   testStart + 1_500_000,
		Attributes: []*common.KeyValue{
			str("http.request.method", "GET"),
			{Key: "http.response.status_code", Value: &common.AnyValue{Value: &common.AnyValue_IntValue{IntValue: 500}}},
			{Key: "test.bool", Value: &common.AnyValue{Value: &common.AnyValue_BoolValue{BoolValue: true}}},
			{Key: "test.double", Value: &common.AnyValue{Value: &common.AnyValue_DoubleValue{DoubleValue: 0.5}}},
			{Key: "test.array", Value: &common.AnyValue{Value: &common.AnyValue_ArrayValue{ArrayValue: &common.ArrayValue{
				Values: []*common.AnyValue{{Value: &common.AnyValue_StringValue{StringValue: "a"}}, {Value: &common.AnyValue_StringValue{StringValue: "b"}}},
			}}}},
		},
		Status: &trace.Status{Code: trace.Status_STATUS_CODE_ERROR, Message: "test error"},
	}
	return &colltrace.ExportTraceServiceRequest{ResourceSpans: []*trace.ResourceSpans{{
		Resource:   testResource(),
		ScopeSpans: []*trace.ScopeSpans{{Scope: testScope(), Spans: []*trace.Span{span}}},
	}}}
}

func testMetrics() *collmetrics.ExportMetricsServiceRequest {
	attrs := []*common.KeyValue{str("http.route", "/test")}
	return &collmetrics.ExportMetricsServiceRequest{ResourceMetrics: []*metrics.ResourceMetrics{{
		Resource: testResource(),
		ScopeMetrics: []*metrics.ScopeMetrics{{Scope: testScope(), Metrics: []*metrics.Metric{
			{Name: "test.requests", Unit: "1", Data: &metrics.Metric_Sum{Sum: &metrics.Sum{
				IsMonotonic:            true,
				AggregationTemporality: metrics.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
				DataPoints: []*metrics.NumberDataPoint{{
					Attributes: attrs, TimeUnixNano: testStart, Value: &metrics.NumberDataPoint_AsInt{AsInt: 3},
				}},
			}}},
			{Name: "test.temperature", Data: &metrics.Metric_Gauge{Gauge: &metrics.Gauge{
				DataPoints: []*metrics.NumberDataPoint{{TimeUnixNano: testStart, Value: &metrics.NumberDataPoint_AsDouble{AsDouble: 21.5}}},
			}}},
			{Name: "test.duration", Unit: "s", Data: &metrics.Metric_Histogram{Histogram: &metrics.Histogram{
				AggregationTemporality: metrics.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
				DataPoints: []*metrics.HistogramDataPoint{{
					Attributes: attrs, TimeUnixNano: testStart, Count: 2, Sum: proto.Float64(3.5),
					ExplicitBounds: []float64{1, 5}, BucketCounts: []uint64{0, 2, 0},
				}},
			}}},
		}}},
	}}}
}

func str(key, value string) *common.KeyValue {
	return &common.KeyValue{Key: key, Value: &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: value}}}
}

// sendTest exports the fixed test request of signal to endpoint and reports the outcome.
// endpoint is a base URL (http://127.0.0.1:PORT) for HTTP, host:port (scheme optional) for gRPC.
func sendTest(signal, protocol, endpoint string, compress bool) error {
	var msg proto.Message = testTraces()
	if signal == "metrics" {
		msg = testMetrics()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	switch protocol {
	case "grpc":
		conn, err := grpc.NewClient(strings.TrimPrefix(endpoint, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		var opts []grpc.CallOption
		if compress {
			opts = append(opts, grpc.UseCompressor(grpcgzip.Name))
		}
		if signal == "traces" {
			_, err = colltrace.NewTraceServiceClient(conn).Export(ctx, msg.(*colltrace.ExportTraceServiceRequest), opts...)
		} else {
			_, err = collmetrics.NewMetricsServiceClient(conn).Export(ctx, msg.(*collmetrics.ExportMetricsServiceRequest), opts...)
		}
		if err != nil {
			return err
		}
		fmt.Println("OK")
		return nil

	case "http/protobuf", "http/json":
		var body []byte
		var err error
		contentType := "application/x-protobuf"
		if protocol == "http/json" {
			contentType = "application/json"
			body, err = toOTLPJSON(msg)
		} else {
			body, err = proto.Marshal(msg)
		}
		if err != nil {
			return err
		}
		if compress {
			var buf bytes.Buffer
			gz := gzip.NewWriter(&buf)
			gz.Write(body)
			gz.Close()
			body = buf.Bytes()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(endpoint, "/")+"/v1/"+signal, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", contentType)
		if compress {
			req.Header.Set("Content-Encoding", "gzip")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		respBody, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("HTTP %d: %q", resp.StatusCode, respBody)
		}
		fmt.Println("OK")
		return nil
	}
	return fmt.Errorf("unknown protocol %q (want http/protobuf, http/json or grpc)", protocol)
}
