// Command otlp-receiver is a small, real OTLP receiver for rbinder's tests.
//
// It serves OTLP/HTTP (POST /v1/traces, /v1/metrics; protobuf or JSON, optionally
// gzip-compressed) and OTLP/gRPC (TraceService/Export, MetricsService/Export) on
// 127.0.0.1, and writes one JSON line per received request to stdout:
//
//	{"http":43211,"grpc":43212}                      (first line: the bound ports)
//	{"signal":"traces","protocol":"grpc","headers":{...},"body":{...OTLP JSON...}}
//
// body uses the standard OTLP/JSON mapping: lowerCamelCase field names, enums as
// numbers, 64-bit integers as strings, and traceId/spanId/parentSpanId as
// lowercase hex (protojson alone would give base64; see ids.go).
//
// With -send-test-span or -send-test-metric it is instead a tiny OTLP client that
// exports one fixed request to ENDPOINT and exits (used by the receiver's own tests).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip-compressed gRPC messages

	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
)

func main() {
	httpPort := flag.Int("http", 0, "OTLP/HTTP port on 127.0.0.1 (0 = ephemeral)")
	grpcPort := flag.Int("grpc", 0, "OTLP/gRPC port on 127.0.0.1 (0 = ephemeral)")
	failFirst := flag.Int("fail-first", 0, "answer the first N export requests with HTTP 503 / gRPC Unavailable")
	stdinEOFExit := flag.Bool("exit-on-stdin-eof", false, "exit when stdin is closed (so a dead parent never leaves us behind)")
	sendSpan := flag.String("send-test-span", "", "client mode: send a test span with PROTOCOL (http/protobuf|http/json|grpc) to the ENDPOINT argument")
	sendMetric := flag.String("send-test-metric", "", "client mode: like -send-test-span, for a test metrics request")
	gzipSend := flag.Bool("gzip", false, "client mode: compress the request with gzip")
	countOnly := flag.Bool("count-only", false, "print only the number of spans of each request, not the request")
	flag.Parse()

	if *sendSpan != "" || *sendMetric != "" {
		if flag.NArg() != 1 {
			fatalf("usage: otlp-receiver -send-test-span|-send-test-metric PROTOCOL [-gzip] ENDPOINT")
		}
		signal, protocol := "traces", *sendSpan
		if *sendMetric != "" {
			signal, protocol = "metrics", *sendMetric
		}
		if err := sendTest(signal, protocol, flag.Arg(0), *gzipSend); err != nil {
			fatalf("%v", err)
		}
		return
	}

	httpLn := listen(*httpPort)
	grpcLn := listen(*grpcPort)
	r := &receiver{out: json.NewEncoder(os.Stdout), countOnly: *countOnly}
	r.failLeft.Store(int64(*failFirst))

	gs := grpc.NewServer(grpc.MaxRecvMsgSize(256 << 20))
	colltrace.RegisterTraceServiceServer(gs, traceService{r: r})
	collmetrics.RegisterMetricsServiceServer(gs, metricsService{r: r})
	go func() { fatalIf(gs.Serve(grpcLn)) }()
	go func() { fatalIf(http.Serve(httpLn, r)) }()

	r.emit(map[string]int{
		"http": httpLn.Addr().(*net.TCPAddr).Port,
		"grpc": grpcLn.Addr().(*net.TCPAddr).Port,
	})

	if *stdinEOFExit {
		go func() {
			buf := make([]byte, 512)
			for {
				if _, err := os.Stdin.Read(buf); err != nil {
					os.Exit(0)
				}
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// receiver is shared by the HTTP handler and the gRPC services.
type receiver struct {
	mu        sync.Mutex
	out       *json.Encoder // one JSON value per line on stdout
	failLeft  atomic.Int64  // export requests still to be refused (-fail-first)
	countOnly bool          // -count-only
}

// record is one line of output per received export request.
type record struct {
	Signal   string            `json:"signal"`             // "traces" | "metrics"
	Protocol string            `json:"protocol"`           // "http/protobuf" | "http/json" | "grpc"
	Headers  map[string]string `json:"headers"`            // request headers / gRPC metadata, lowercase keys
	Body     json.RawMessage   `json:"body,omitempty"`     // the request in OTLP/JSON
	Spans    int               `json:"spans,omitempty"`    // with -count-only: spans in a traces request
	Rejected bool              `json:"rejected,omitempty"` // refused because of -fail-first
	Error    string            `json:"error,omitempty"`    // the request could not be decoded
}

func (r *receiver) emit(v any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.out.Encode(v); err != nil {
		fatalf("writing stdout: %v", err)
	}
}

// shouldFail consumes one of the -fail-first refusals, if any are left.
func (r *receiver) shouldFail() bool { return r.failLeft.Add(-1) >= 0 }

func listen(port int) net.Listener {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	fatalIf(err)
	return ln
}

func fatalIf(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "otlp-receiver: "+format+"\n", args...)
	os.Exit(1)
}
