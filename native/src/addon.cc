// N-API glue only: configuration in, batches of records out (tracer/src/native.ts declares it).
#include <napi.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>

#include "engine/engine.h"
#include "engine/otlp.h"

namespace rbinder {
namespace {

// Batches waiting for the JS thread beyond this many are dropped (counted), so a stalled exporter
// never makes the engine, and so the program, wait.
constexpr int kMaxBatchesInFlight = 256;

// The request metrics (tracer/src/export/http-metrics.ts) count each exchange in the series its
// attributes name. JS used to find the series by a key built from the record's strings, which
// meant decoding them for every exchange, sampled or not. Each record now carries an id drawn here
// from the same fields (kind, status, protocol version, method, error; for clients also the Host,
// the peer and an absolute-form target): records with one id have the same bytes in those fields,
// so JS looks the id up and decodes the strings only the first time it meets it. Ids are never
// reused; past kMaxSeriesIds keys, new ones get 0 and JS builds their key itself. One table for
// the process, used on the JS thread only (spans_to_js runs there, for batches and spanBufferOf).
class MetricSeriesIds {
 public:
  static constexpr size_t kMaxSeriesIds = 16384;

  uint32_t id_of(const SpanRecord& s) {
    key_.clear();
    key_.push_back(static_cast<char>(s.kind));
    number(static_cast<uint32_t>(s.status_code));
    for (const std::string* v : {&s.protocol_version, &s.method, &s.error}) append(*v);
    if (s.kind != kServerKind) {
      for (const std::string* v : {&s.host, &s.peer.address}) append(*v);
      number(s.peer.port);
      static const std::string kOriginForm;  // "/…" names no server: such targets share a key
      append(!s.target.empty() && s.target[0] == '/' ? kOriginForm : s.target);
    }
    auto found = ids_.find(key_);
    if (found != ids_.end()) return found->second;
    if (ids_.size() >= kMaxSeriesIds) return 0;
    ids_.emplace(key_, ++last_);
    return last_;
  }

 private:
  static constexpr uint8_t kServerKind = 1;
  void number(uint32_t v) { key_.append(reinterpret_cast<const char*>(&v), sizeof(v)); }
  // Each string with its length, so that no two different records share a key.
  void append(const std::string& v) {
    number(static_cast<uint32_t>(v.size()));
    key_.append(v);
  }
  std::string key_;
  std::unordered_map<std::string, uint32_t> ids_;
  uint32_t last_ = 0;
};

MetricSeriesIds& metric_series_ids() {
  static MetricSeriesIds ids;
  return ids;
}

class JsBatchSink final : public BatchSink {
 public:
  void init(Napi::Env env, Napi::Function callback) {
    tsfn_ = Napi::ThreadSafeFunction::New(env, callback, "rbinder-engine", 0, 1);
  }
  bool deliver(std::unique_ptr<Batch> batch) override {
    const bool final_batch = batch->exit.has_value();
    if (!final_batch && in_flight_.load() >= kMaxBatchesInFlight) return false;
    in_flight_++;
    Batch* raw = batch.release();
    napi_status st = tsfn_.NonBlockingCall(raw, [this](Napi::Env env, Napi::Function cb, Batch* b) {
      std::unique_ptr<Batch> owned(b);
      in_flight_--;
      if (env == nullptr || cb.IsEmpty()) return;
      call_js(env, cb, *owned);
    });
    if (st != napi_ok) {
      delete raw;
      in_flight_--;
      return false;
    }
    return true;
  }
  size_t backlog() const override { return static_cast<size_t>(in_flight_.load()); }
  // Sampled spans also carry their OTLP protobuf encoding (JS exports over OTLP protobuf).
  void set_otlp_spans(bool on) { otlp_spans_ = on; }
  uint64_t spans_encoded() const { return spans_encoded_.load(std::memory_order_relaxed); }

  // Spans go to JS as one buffer (layout: tracer/src/span-buffer.ts), not as one object each:
  // setting two dozen named properties per span through N-API cost more than the whole rest of
  // the span's way to the exporter. Runs on the JS thread (export priority), not the engine's.
  // `encoded` (if given) counts the spans whose OTLP bytes were made. An ArrayBuffer, which JS
  // views as a Buffer of its own making: a Buffer made here has a map of its own (N-API sets its
  // prototype after creation), which dies at a full GC while no such buffer is alive, and V8 then
  // throws away the code it optimized for it (the decoder, the serializer) and compiles it again.
  static Napi::ArrayBuffer spans_to_js(Napi::Env env, const std::vector<SpanRecord>& spans, bool otlp_spans,
                                       std::atomic<uint64_t>* encoded = nullptr) {
    Encoder e;
    e.reserve(spans.size() * 512);
    std::string otlp;
    MetricSeriesIds& series = metric_series_ids();
    for (const SpanRecord& s : spans) {
      e.u8(s.kind);
      e.u8(static_cast<uint8_t>((s.has_parent ? 1 : 0) | (s.parent_remote ? 2 : 0)));
      e.u8(s.context.flags);
      e.u8(0);
      e.raw(s.context.trace_id.data(), s.context.trace_id.size());
      e.raw(s.context.span_id.data(), s.context.span_id.size());
      e.raw(s.parent_span_id.data(), s.parent_span_id.size());
      e.time(s.start);
      e.time(s.end);
      for (int v : {static_cast<int>(s.pid), static_cast<int>(s.tid), s.status_code, static_cast<int>(s.peer.port),
                    static_cast<int>(s.local.port)})
        e.u32(static_cast<uint32_t>(v));
      e.f64(static_cast<double>(s.request_body_size));
      e.f64(static_cast<double>(s.response_body_size));
      e.u32(series.id_of(s));
      for (const std::string* v : {&s.context.trace_state, &s.method, &s.target, &s.protocol_version, &s.host,
                                   &s.user_agent, &s.peer.address, &s.local.address, &s.error})
        e.str(*v);
      otlp.clear();
      if (otlp_spans && s.context.sampled() && otlp::encode_span(s, otlp) && encoded) (*encoded)++;
      e.str(otlp);
    }
    Napi::ArrayBuffer out = Napi::ArrayBuffer::New(env, e.bytes().size());
    if (!e.bytes().empty()) std::memcpy(out.Data(), e.bytes().data(), e.bytes().size());
    return out;
  }

 private:
  class Encoder {
   public:
    void reserve(size_t n) { out_.reserve(n); }
    void u8(uint8_t v) { out_.push_back(v); }
    void u32(uint32_t v) { raw(&v, sizeof(v)); }
    void f64(double v) { raw(&v, sizeof(v)); }
    void raw(const void* p, size_t n) {
      const auto* b = static_cast<const uint8_t*>(p);
      out_.insert(out_.end(), b, b + n);
    }
    void str(const std::string& s) {
      u32(static_cast<uint32_t>(s.size()));
      raw(s.data(), s.size());
    }
    void time(TimeNs t) {
      u32(static_cast<uint32_t>(t / 1000000000ull));
      u32(static_cast<uint32_t>(t % 1000000000ull));
    }
    const std::vector<uint8_t>& bytes() const { return out_; }

   private:
    std::vector<uint8_t> out_;
  };
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "span buffer is little-endian");

  // onBatch(spans, processes, exit): positional, because JS code optimized for an object made
  // here would be thrown away as the buffer's was (above) each time the object's map died. The
  // processes and the exit are undefined when there are none (most batches).
  void call_js(Napi::Env env, Napi::Function cb, const Batch& b) {
    Napi::Value processes = b.processes.empty() ? env.Undefined() : processes_to_js(env, b);
    Napi::Value exit = b.exit ? exit_to_js(env, *b.exit) : env.Undefined();
    cb.Call({spans_to_js(env, b.spans, otlp_spans_, &spans_encoded_), processes, exit});
  }

  static Napi::Array processes_to_js(Napi::Env env, const Batch& b) {
    Napi::Array processes = Napi::Array::New(env, b.processes.size());
    for (size_t i = 0; i < b.processes.size(); i++) {
      const ProcessInfo& p = b.processes[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("pid", p.pid);
      o.Set("ppid", p.ppid);
      o.Set("executablePath", p.executable_path);
      Napi::Array args = Napi::Array::New(env, p.command_args.size());
      for (size_t j = 0; j < p.command_args.size(); j++) args.Set(static_cast<uint32_t>(j), p.command_args[j]);
      o.Set("commandArgs", args);
      o.Set("mode", p.fast ? "fast" : "ptrace");
      processes.Set(static_cast<uint32_t>(i), o);
    }
    return processes;
  }

  static Napi::Object exit_to_js(Napi::Env env, const ExitInfo& exit) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("code", exit.exited ? Napi::Value(Napi::Number::New(env, exit.code)) : env.Null());
    e.Set("signal", exit.exited ? env.Null() : Napi::Value(Napi::Number::New(env, exit.signal)));
    if (!exit.engine_error.empty()) e.Set("engineError", exit.engine_error);
    if (exit.spawn_errno != 0) {
      Napi::Object se = Napi::Object::New(env);
      se.Set("errno", exit.spawn_errno);
      const char* name = strerrorname_np(exit.spawn_errno);
      se.Set("message", std::string(name ? name : "E?") + ": " + strerror(exit.spawn_errno));
      e.Set("spawnError", se);
    }
    return e;
  }

  Napi::ThreadSafeFunction tsfn_;
  std::atomic<int> in_flight_{0};
  bool otlp_spans_ = false;
  std::atomic<uint64_t> spans_encoded_{0};  // written on the JS thread, read there too (engineStats)
};

// One engine per process; never destroyed (its thread may outlive module teardown at exit).
Engine* g_engine = nullptr;
JsBatchSink* g_sink = nullptr;

std::vector<std::string> string_array(const Napi::Value& v, const char* what) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), std::string("startEngine: ") + what + " must be an array");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).ToString().Utf8Value());
  return out;
}

Napi::Value StartEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g_engine) throw Napi::Error::New(env, "startEngine: the engine is already running");
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
    throw Napi::TypeError::New(env, "startEngine(options, onBatch)");
  Napi::Object opts = info[0].As<Napi::Object>();
  EngineConfig config;
  config.file = opts.Get("file").ToString().Utf8Value();
  config.argv = string_array(opts.Get("argv"), "argv");
  config.env = string_array(opts.Get("env"), "env");
  if (opts.Has("inheritFds")) {
    Napi::Array fds = opts.Get("inheritFds").As<Napi::Array>();
    for (uint32_t i = 0; i < fds.Length(); i++) config.inherit_fds.push_back(fds.Get(i).ToNumber().Int32Value());
  }
  if (opts.Has("propagators")) {
    config.tracker.propagation.propagators = opts.Get("propagators").ToNumber().Uint32Value();
  }
  if (opts.Has("fast")) config.fast = opts.Get("fast").ToBoolean().Value();
  if (opts.Has("idleExport")) config.idle_export = opts.Get("idleExport").ToBoolean().Value();
  if (opts.Has("launched") && opts.Get("launched").IsObject()) {
    Napi::Object l = opts.Get("launched").As<Napi::Object>();
    LaunchedProgram launched;
    launched.pid = l.Get("pid").ToNumber().Int32Value();
    launched.listener_fd = l.Get("listenerFd").ToNumber().Int32Value();
    launched.region_fd = l.Get("regionFd").ToNumber().Int32Value();
    config.launched = launched;
  }
  if (opts.Has("inject")) config.tracker.inject = opts.Get("inject").ToBoolean().Value();
  if (opts.Has("injectTo")) {
    for (const std::string& entry : string_array(opts.Get("injectTo"), "injectTo")) {
      std::string error;
      if (!config.tracker.inject_to.add(entry, error)) throw Napi::Error::New(env, "inject-to: " + error);
    }
  }
  if (opts.Has("sampler")) {
    Napi::Object s = opts.Get("sampler").As<Napi::Object>();
    config.tracker.sampler.type = static_cast<SamplerType>(s.Get("type").ToNumber().Int32Value());
    config.tracker.sampler.ratio = s.Get("ratio").ToNumber().DoubleValue();
  }
  g_sink = new JsBatchSink();
  g_sink->init(env, info[1].As<Napi::Function>());
  if (opts.Has("otlpSpans")) g_sink->set_otlp_spans(opts.Get("otlpSpans").ToBoolean().Value());
  g_engine = new Engine(std::move(config), *g_sink);
  std::string error;
  pid_t pid = g_engine->start(error);
  if (pid < 0) throw Napi::Error::New(env, error);
  return Napi::Number::New(env, pid);
}

Napi::Value EngineStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  Napi::Object stops = Napi::Object::New(env);
  o.Set("stops", stops);
  if (!g_engine) return o;
  EngineStats& s = g_engine->stats();
  for (size_t i = 0; i < syscall::kTracedSyscallCount; i++) {
    std::string name = syscall::kTracedSyscalls[i].name;
    if (uint64_t n = s.entry_stops[i].load()) stops.Set(name + ".enter", static_cast<double>(n));
    if (uint64_t n = s.exit_stops[i].load()) stops.Set(name + ".exit", static_cast<double>(n));
  }
  o.Set("bytesRead", static_cast<double>(s.tracker.bytes_read.load()));
  o.Set("bytesWritten", static_cast<double>(s.tracker.bytes_written.load()));
  o.Set("connectionsTracked", static_cast<double>(s.tracker.connections_tracked.load()));
  o.Set("connectionsAbandoned", static_cast<double>(s.tracker.connections_abandoned.load()));
  o.Set("connectionsNotHttp", static_cast<double>(s.tracker.connections_not_http.load()));
  o.Set("parseErrors", static_cast<double>(s.tracker.parse_errors.load()));
  o.Set("spansDropped", static_cast<double>(s.spans_dropped.load() + s.tracker.unsampled_dropped.load()));
  o.Set("tracesShed", static_cast<double>(s.tracker.traces_shed.load()));
  o.Set("spansEncoded", static_cast<double>(g_sink ? g_sink->spans_encoded() : 0));
  o.Set("headersInjected", static_cast<double>(s.tracker.headers_injected.load()));
  o.Set("injectionsSkipped", static_cast<double>(s.tracker.injections_skipped.load()));
  o.Set("contextsPresent", static_cast<double>(s.tracker.contexts_present.load()));
  o.Set("stubContexts", static_cast<double>(s.tracker.stub_contexts.load()));
  o.Set("stubInjections", static_cast<double>(s.tracker.stub_injections.load()));
  o.Set("stubMismatches", static_cast<double>(s.tracker.stub_mismatches.load()));
  o.Set("injectionsSplit", static_cast<double>(s.tracker.injections_split.load()));
  o.Set("fastPathTraps", static_cast<double>(s.fast_traps.load()));
  o.Set("fastPathDirect", static_cast<double>(s.fast_direct.load()));
  o.Set("callSitesApproved", static_cast<double>(s.sites_approved.load()));
  o.Set("callSitesRefused", static_cast<double>(s.sites_refused.load()));
  o.Set("fastPathUpcalls", static_cast<double>(s.fast_upcalls.load()));
  o.Set("fastPathEvents", static_cast<double>(s.fast_events.load()));
  o.Set("fastPathEventBytes", static_cast<double>(s.fast_event_bytes.load()));
  o.Set("fastPathDropped", static_cast<double>(s.fast_dropped.load()));
  o.Set("fastPathProcesses", static_cast<double>(s.fast_processes.load()));
  o.Set("fastPathFallbacks", static_cast<double>(s.fast_fallbacks.load()));
  return o;
}

// JS's span queue is behind (true) or has caught up (false): load shedding (engine/tracker.h).
void SetExportBehind(const Napi::CallbackInfo& info) {
  if (g_engine && info.Length() > 0) g_engine->set_export_behind(info[0].ToBoolean().Value());
}

// For tests and benchmarks of the span buffer and its OTLP bytes: plain objects with SpanRecord's
// fields (ids as hex, times as [seconds, nanoseconds]) → the buffer the engine would hand over,
// with OTLP bytes for sampled spans unless the second argument is false.
Napi::Value SpanBufferOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) throw Napi::TypeError::New(env, "spanBufferOf(records)");
  Napi::Array in = info[0].As<Napi::Array>();
  std::vector<SpanRecord> spans(in.Length());
  const auto hex = [&](Napi::Object o, const char* key, uint8_t* out, size_t n) {
    const std::string h = o.Get(key).ToString().Utf8Value();
    for (size_t i = 0; i < n && 2 * i + 1 < h.size(); i++) out[i] = static_cast<uint8_t>(std::stoi(h.substr(2 * i, 2), nullptr, 16));
  };
  const auto time = [](Napi::Object o, const char* key) {
    Napi::Array t = o.Get(key).As<Napi::Array>();
    return static_cast<TimeNs>(t.Get(0u).ToNumber().Int64Value()) * 1000000000ull + t.Get(1u).ToNumber().Int64Value();
  };
  for (uint32_t i = 0; i < in.Length(); i++) {
    Napi::Object o = in.Get(i).As<Napi::Object>();
    SpanRecord& s = spans[i];
    const auto text = [&](const char* key) {
      // Strings may be given as Buffers, to test bytes that are not valid UTF-8.
      Napi::Value v = o.Get(key);
      if (!v.IsBuffer()) return v.ToString().Utf8Value();
      Napi::Buffer<char> b = v.As<Napi::Buffer<char>>();
      return std::string(b.Data(), b.Length());
    };
    s.kind = static_cast<uint8_t>(o.Get("kind").ToNumber().Uint32Value());
    hex(o, "traceId", s.context.trace_id.data(), s.context.trace_id.size());
    hex(o, "spanId", s.context.span_id.data(), s.context.span_id.size());
    s.has_parent = !text("parentSpanId").empty();
    if (s.has_parent) hex(o, "parentSpanId", s.parent_span_id.data(), s.parent_span_id.size());
    s.parent_remote = o.Get("parentIsRemote").ToBoolean().Value();
    s.context.flags = static_cast<uint8_t>(o.Get("traceFlags").ToNumber().Uint32Value());
    s.context.trace_state = text("traceState");
    s.start = time(o, "startTime");
    s.end = time(o, "endTime");
    s.pid = o.Get("pid").ToNumber().Int32Value();
    s.tid = o.Get("tid").ToNumber().Int32Value();
    s.status_code = o.Get("statusCode").ToNumber().Int32Value();
    s.peer.port = static_cast<uint16_t>(o.Get("peerPort").ToNumber().Uint32Value());
    s.local.port = static_cast<uint16_t>(o.Get("localPort").ToNumber().Uint32Value());
    s.request_body_size = static_cast<uint64_t>(o.Get("requestBodySize").ToNumber().DoubleValue());
    s.response_body_size = static_cast<uint64_t>(o.Get("responseBodySize").ToNumber().DoubleValue());
    s.method = text("method");
    s.target = text("target");
    s.protocol_version = text("protocolVersion");
    s.host = text("host");
    s.user_agent = text("userAgent");
    s.peer.address = text("peerAddress");
    s.local.address = text("localAddress");
    s.error = text("error");
  }
  return JsBatchSink::spans_to_js(env, spans, info.Length() < 2 || info[1].ToBoolean().Value());
}

// True when this process is in the foreground process group of the terminal on stdin: the
// terminal then already sends SIGINT/SIGQUIT to the program too, so they are not forwarded.
Napi::Value IsForegroundOfTerminal(const Napi::CallbackInfo& info) {
  pid_t fg = tcgetpgrp(STDIN_FILENO);
  return Napi::Boolean::New(info.Env(), fg > 0 && fg == getpgrp());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("startEngine", Napi::Function::New(env, StartEngine));
  exports.Set("engineStats", Napi::Function::New(env, EngineStatsJs));
  exports.Set("setExportBehind", Napi::Function::New(env, SetExportBehind));
  exports.Set("isForegroundOfTerminal", Napi::Function::New(env, IsForegroundOfTerminal));
  exports.Set("spanBufferOf", Napi::Function::New(env, SpanBufferOf));
  return exports;
}

}  // namespace
}  // namespace rbinder

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return rbinder::Init(env, exports); }
NODE_API_MODULE(rbinder_native, InitModule)
