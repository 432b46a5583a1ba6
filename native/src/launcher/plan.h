// Whether the native launcher may start the program itself, before Node boots (docs/fast-path.md,
// "The launcher"): only for a command line that rbinder's own parser (tracer/src/config.ts) is
// sure to accept in fast mode. Anything else (help, a flag it does not know, a value it cannot
// vouch for, ptrace mode) goes to Node as before, which then reports errors as usual. Pure: argv
// and environment in, a decision out, so it is tested without starting anything.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace rbinder::launcher {

struct LaunchPlan {
  bool launch = false;
  std::string reason;                // why not, when !launch
  size_t command_at = 0;             // index in args of COMMAND
  std::string file;                  // COMMAND resolved as execvp would
};

// `args`: rbinder's arguments (no program name). `getenv`: the environment rbinder was given.
// `is_executable(path)`: true for an executable regular file (injected for tests).
using EnvLookup = std::function<const char*(const char*)>;
LaunchPlan plan_launch(const std::vector<std::string>& args, const EnvLookup& getenv,
                       const std::function<bool(const std::string&)>& is_executable);

// The checks on single values, shared with the tests.
bool valid_enum_list(const std::string& raw, const std::vector<std::string>& allowed);
bool plainly_valid_url(const std::string& raw);
bool valid_millis(const std::string& raw);
bool valid_inject_to(const std::string& raw);

}  // namespace rbinder::launcher
