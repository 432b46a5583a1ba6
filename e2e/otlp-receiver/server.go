package main

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)

// newRequest and newResponse give the message types of each signal's Export call.
func newRequest(signal string) proto.Message {
	if signal == "traces" {
		return &colltrace.ExportTraceServiceRequest{}
	}
	return &collmetrics.ExportMetricsServiceRequest{}
}

func newResponse(signal string) proto.Message {
	if signal == "traces" {
		return &colltrace.ExportTraceServiceResponse{}
	}
	return &collmetrics.ExportMetricsServiceResponse{}
}

// ServeHTTP implements OTLP/HTTP: POST /v1/traces and POST /v1/metrics.
func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	signal := map[string]string{"/v1/traces": "traces", "/v1/metrics": "metrics"}[req.URL.Path]
	if signal == "" {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "only POST is allowed", http.StatusMethodNotAllowed)
		return
	}
	mediaType, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	var protocol string
	switch mediaType {
	case "application/x-protobuf":
		protocol = "http/protobuf"
	case "application/json":
		protocol = "http/json"
	default:
		http.Error(w, "unsupported Content-Type "+mediaType, http.StatusUnsupportedMediaType)
		return
	}
	rec := record{Signal: signal, Protocol: protocol, Headers: map[string]string{}}
	for k, v := range req.Header {
		rec.Headers[strings.ToLower(k)] = strings.Join(v, ", ")
	}

	data, err := readHTTPBody(req)
	if err == nil {
		if r.countOnly && protocol == "http/protobuf" {
			err = countWire(&rec, data)
		} else {
			msg := newRequest(signal)
			if err = unmarshalBody(data, protocol, msg); err == nil {
				err = r.describe(&rec, msg)
			}
		}
	}
	if err != nil {
		rec.Error = err.Error()
		r.emit(rec)
		writeHTTP(w, protocol, http.StatusBadRequest, &spb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()})
		return
	}
	if r.shouldFail() {
		rec.Rejected = true
		r.emit(rec)
		writeHTTP(w, protocol, http.StatusServiceUnavailable, &spb.Status{Code: int32(codes.Unavailable), Message: "refused by -fail-first"})
		return
	}
	r.emit(rec)
	writeHTTP(w, protocol, http.StatusOK, newResponse(signal))
}

// readHTTPBody reads the request's body, gunzipped when it says so.
func readHTTPBody(req *http.Request) ([]byte, error) {
	var body io.Reader = req.Body
	switch enc := strings.ToLower(req.Header.Get("Content-Encoding")); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		body = gz
	default:
		return nil, fmt.Errorf("unsupported Content-Encoding %q", enc)
	}
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	return data, nil
}

func unmarshalBody(data []byte, protocol string, msg proto.Message) error {
	if protocol == "http/protobuf" {
		return proto.Unmarshal(data, msg)
	}
	return fromOTLPJSON(data, msg)
}

// countWire is -count-only's protobuf path: the request's spans counted on the wire (wire.go).
func countWire(rec *record, data []byte) error {
	if rec.Signal != "traces" {
		return checkMessage(data)
	}
	spans, err := countSpans(data)
	if err == nil {
		rec.Spans = spans // a refused request delivered nothing
	}
	return err
}

// writeHTTP answers in the encoding of the request, as OTLP/HTTP requires.
func writeHTTP(w http.ResponseWriter, protocol string, code int, msg proto.Message) {
	var data []byte
	var err error
	if protocol == "http/protobuf" {
		w.Header().Set("Content-Type", "application/x-protobuf")
		data, err = proto.Marshal(msg)
	} else {
		w.Header().Set("Content-Type", "application/json")
		data, err = protojson.Marshal(msg)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(code)
	w.Write(data)
}

// handleGRPC is the body of both gRPC Export methods.
func (r *receiver) handleGRPC(ctx context.Context, signal string, msg proto.Message) error {
	rec := record{Signal: signal, Protocol: "grpc", Headers: map[string]string{}}
	md, _ := metadata.FromIncomingContext(ctx)
	for k, v := range md {
		rec.Headers[k] = strings.Join(v, ", ")
	}
	if err := r.describe(&rec, msg); err != nil {
		rec.Error = err.Error()
		r.emit(rec)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if r.shouldFail() {
		rec.Rejected = true
		r.emit(rec)
		return status.Error(codes.Unavailable, "refused by -fail-first")
	}
	r.emit(rec)
	return nil
}

type traceService struct {
	colltrace.UnimplementedTraceServiceServer
	r *receiver
}

func (s traceService) Export(ctx context.Context, req *colltrace.ExportTraceServiceRequest) (*colltrace.ExportTraceServiceResponse, error) {
	if err := s.r.handleGRPC(ctx, "traces", req); err != nil {
		return nil, err
	}
	return &colltrace.ExportTraceServiceResponse{}, nil
}

type metricsService struct {
	collmetrics.UnimplementedMetricsServiceServer
	r *receiver
}

func (s metricsService) Export(ctx context.Context, req *collmetrics.ExportMetricsServiceRequest) (*collmetrics.ExportMetricsServiceResponse, error) {
	if err := s.r.handleGRPC(ctx, "metrics", req); err != nil {
		return nil, err
	}
	return &collmetrics.ExportMetricsServiceResponse{}, nil
}

// describe puts the request into its output line: the whole request as OTLP/JSON, or with
// -count-only just the number of spans (the benchmark's receiver, whose JSON conversion would
// otherwise compete for a CPU with the load generator; over OTLP/HTTP protobuf it does not even
// decode the request: countWire).
func (r *receiver) describe(rec *record, msg proto.Message) error {
	if !r.countOnly {
		body, err := toOTLPJSON(msg)
		rec.Body = body
		return err
	}
	if traces, ok := msg.(*colltrace.ExportTraceServiceRequest); ok {
		for _, rs := range traces.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				rec.Spans += len(ss.GetSpans())
			}
		}
	}
	return nil
}
