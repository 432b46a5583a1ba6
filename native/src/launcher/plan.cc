#include "launcher/plan.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "engine/propagation.h"

namespace rbinder::launcher {
namespace {

// The options of tracer/src/config.ts (buildProgram), each with the check its value must pass
// here for the launcher to start the program. Options missing from this table (--help,
// --version, --command-by-arch) and unknown ones leave the command line to Node.
enum class Check { kAny, kExporters, kUrl, kProtocol, kPropagators, kInjectTo, kMode, kExportPriority, kMillis, kLogLevel };
struct OptionSpec {
  const char* name;
  Check check;
};
constexpr OptionSpec kOptions[] = {
    {"--service-name", Check::kAny},     {"--exporter", Check::kExporters}, {"--endpoint", Check::kUrl},
    {"--protocol", Check::kProtocol},    {"--propagators", Check::kPropagators},
    {"--inject-to", Check::kInjectTo},   {"--mode", Check::kMode},          {"--flush-timeout", Check::kMillis},
    {"--log-level", Check::kLogLevel},   {"--export-priority", Check::kExportPriority},
};
const std::vector<std::string> kExporters = {"otlp", "console"};
const std::vector<std::string> kProtocols = {"grpc", "http/protobuf", "http/json"};
const std::vector<std::string> kPropagators = {"tracecontext", "baggage", "b3", "b3multi"};
const std::vector<std::string> kExportPriorities = {"idle", "normal"};
const std::vector<std::string> kLogLevels = {"fatal", "error", "warn", "info", "debug", "trace", "silent"};

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && (s[a] == ' ' || s[a] == '\t')) a++;
  while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t')) b--;
  return s.substr(a, b - a);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool one_of(const std::string& v, const std::vector<std::string>& allowed) {
  return std::find(allowed.begin(), allowed.end(), v) != allowed.end();
}

// "a, b,,c" → {"a", "b", "c"}, as config.ts's splitList.
std::vector<std::string> split_list(const std::string& raw) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = raw.find(',', start);
    std::string item = trim(raw.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

// Only characters that need no escaping anywhere: a value with anything else goes to Node.
bool plain_text(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

bool is_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A host name of letters, digits and hyphens, or a dotted IPv4 address: a last label of digits
// makes the URL parser read the whole host as an IPv4 address, which must then be one.
bool plain_host(const std::string& host) {
  if (host.empty() || host.front() == '.' || host.back() == '.') return false;
  std::vector<std::string> labels;
  size_t start = 0;
  for (;;) {
    const size_t dot = host.find('.', start);
    labels.push_back(host.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const std::string& l : labels) {
    if (l.empty() || !std::all_of(l.begin(), l.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; }))
      return false;
  }
  const std::string& last = labels.back();
  const bool hex = last.size() >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') &&
                   std::all_of(last.begin() + 2, last.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  if (!is_digits(last) && !hex) return true;
  // Numeric-looking last label: only a plain dotted quad is vouched for.
  if (labels.size() != 4) return false;
  for (const std::string& l : labels) {
    if (!is_digits(l) || l.size() > 3 || (l.size() > 1 && l[0] == '0') || std::stoi(l) > 255) return false;
  }
  return true;
}

}  // namespace

bool valid_enum_list(const std::string& raw, const std::vector<std::string>& allowed) {
  const std::vector<std::string> names = split_list(lower(raw));
  if (names.empty()) return false;
  if (one_of("none", names)) return names.size() == 1;
  return std::all_of(names.begin(), names.end(), [&](const std::string& n) { return one_of(n, allowed); });
}

bool plainly_valid_url(const std::string& raw) {
  if (!plain_text(raw)) return false;
  const std::string l = lower(raw);
  size_t at;
  if (l.rfind("http://", 0) == 0) {
    at = 7;
  } else if (l.rfind("https://", 0) == 0) {
    at = 8;
  } else {
    return false;
  }
  const size_t end = raw.find_first_of("/?#", at);
  const std::string authority = raw.substr(at, end == std::string::npos ? std::string::npos : end - at);
  if (authority.find('@') != std::string::npos || raw.find('\\') != std::string::npos) return false;
  std::string host = authority, port;
  if (!authority.empty() && authority[0] == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos) return false;
    host = authority.substr(1, close - 1);
    if (host.empty() || !std::all_of(host.begin(), host.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == ':'; }))
      return false;
    if (host.find(':') == std::string::npos) return false;
    const std::string rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return false;
      port = rest.substr(1);
      if (!is_digits(port)) return false;
    }
    // Leave anything but plain full or "::"-shortened forms to Node's URL parser.
    if (host.find(":::") != std::string::npos) return false;
  } else {
    const size_t colon = authority.find(':');
    if (colon != std::string::npos) {
      port = authority.substr(colon + 1);
      host = authority.substr(0, colon);
      if (!is_digits(port)) return false;
    }
    if (!plain_host(host)) return false;
  }
  if (!port.empty() && (port.size() > 5 || std::stoi(port) > 65535)) return false;
  return true;
}

bool valid_millis(const std::string& raw) {
  const std::string t = trim(raw);
  return is_digits(t) && t.size() <= 15;  // a safe integer
}

bool valid_inject_to(const std::string& raw) {
  const std::vector<std::string> entries = split_list(raw);
  if (one_of("none", entries)) return true;
  DestinationAllowList list;
  std::string error;
  return std::all_of(entries.begin(), entries.end(), [&](const std::string& e) { return list.add(e, error); });
}

LaunchPlan plan_launch(const std::vector<std::string>& args, const EnvLookup& getenv,
                       const std::function<bool(const std::string&)>& is_executable) {
  LaunchPlan plan;
  auto defer = [&](std::string why) {
    plan.launch = false;
    plan.reason = std::move(why);
    return plan;
  };
  auto env = [&](const char* name) -> std::string {
    const char* v = getenv(name);
    return v ? v : "";
  };
  if (trim(env("RBINDER_LAUNCHER")) == "0") return defer("RBINDER_LAUNCHER=0");
  const std::string force_proc_net = env("RBINDER_FORCE_PROC_NET");
  if (!force_proc_net.empty() && force_proc_net != "0") return defer("RBINDER_FORCE_PROC_NET");

  std::string mode, inject_to;
  bool inject_to_flag = false;
  size_t i = 0;
  for (; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a == "--") {
      i++;
      break;
    }
    if (a.empty() || a[0] != '-') break;  // COMMAND: what follows belongs to the program
    if (a.rfind("--", 0) != 0) return defer("option " + a);
    const size_t eq = a.find('=');
    const std::string name = a.substr(0, eq);
    const OptionSpec* spec = nullptr;
    for (const OptionSpec& o : kOptions)
      if (name == o.name) spec = &o;
    if (!spec) return defer("option " + name);
    std::string value;
    if (eq != std::string::npos) {
      value = a.substr(eq + 1);
    } else if (i + 1 < args.size()) {
      value = args[++i];
    } else {
      return defer("option " + name + " without a value");
    }
    bool ok = true;
    switch (spec->check) {
      case Check::kAny: break;
      case Check::kExporters: ok = valid_enum_list(value, kExporters); break;
      case Check::kUrl: ok = plainly_valid_url(value); break;
      case Check::kProtocol: ok = one_of(value, kProtocols); break;
      case Check::kPropagators: ok = valid_enum_list(value, kPropagators); break;
      case Check::kInjectTo: ok = valid_inject_to(value); inject_to_flag = true; break;
      case Check::kMode: ok = value == "fast" || value == "ptrace"; mode = value; break;
      case Check::kExportPriority: ok = one_of(value, kExportPriorities); break;
      case Check::kMillis: ok = valid_millis(value); break;
      case Check::kLogLevel: ok = one_of(value, kLogLevels); break;
    }
    if (!ok) return defer("value of " + name);
  }
  if (i >= args.size() || args[i].empty()) return defer("no COMMAND");

  if (mode.empty()) {
    const std::string from_env = lower(trim(env("RBINDER_MODE")));
    if (from_env.empty() || from_env == "fast") {
      mode = "fast";
    } else if (from_env == "ptrace") {
      mode = from_env;
    } else {
      return defer("RBINDER_MODE");  // Node warns and uses the default
    }
  }
  if (mode != "fast") return defer("--mode " + mode);
  if (!inject_to_flag) {
    const std::string from_env = trim(env("RBINDER_INJECT_TO"));
    if (!from_env.empty() && !valid_inject_to(from_env)) return defer("RBINDER_INJECT_TO");
  }

  // The program, found as execvp (and tracer/src/spawn.ts) would; a failure is Node's to report.
  const std::string& command = args[i];
  if (command.find('/') != std::string::npos) {
    if (!is_executable(command)) return defer("COMMAND not executable");
    plan.file = command;
  } else {
    const char* path = getenv("PATH");
    const std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
    size_t start = 0;
    for (;;) {
      const size_t colon = dirs.find(':', start);
      std::string dir = dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + command;
      if (is_executable(candidate)) {
        plan.file = candidate;
        break;
      }
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    if (plan.file.empty()) return defer("COMMAND not found");
  }
  plan.launch = true;
  plan.command_at = i;
  return plan;
}

}  // namespace rbinder::launcher
