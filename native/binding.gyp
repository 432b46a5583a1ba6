{
  "targets": [
    {
      "target_name": "rbinder_native",
      "sources": [
        "src/addon.cc",
        "src/engine/engine.cc",
        "src/engine/detached.cc",
        "src/engine/fast_path.cc",
        "src/engine/call_sites.cc",
        "src/arch/x86_64_decode.cc",
        "src/engine/tracker.cc",
        "src/engine/otlp.cc",
        "src/engine/ids.cc",
        "src/engine/propagation.cc",
        "src/http/parser.cc",
        "src/syscall/seccomp.cc",
        "src/tracee/memory.cc",
        "src/tracee/sockets.cc",
        "src/tracee/vdso.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "src",
        "gen"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags!": [
        "-fno-exceptions"
      ],
      "cflags_cc!": [
        "-fno-exceptions",
        "-std=gnu++17"
      ],
      "cflags_cc": [
        "-std=c++17",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Werror=switch"
      ]
    },
    {
      "target_name": "rbinder-launch",
      "type": "executable",
      "sources": [
        "src/launcher/main.cc",
        "src/launcher/plan.cc",
        "src/engine/fast_path.cc",
        "src/engine/propagation.cc",
        "src/engine/ids.cc",
        "src/http/parser.cc",
        "src/tracee/memory.cc",
        "src/tracee/sockets.cc",
        "src/tracee/vdso.cc"
      ],
      "include_dirs": [
        "src",
        "gen"
      ],
      "cflags!": [
        "-fno-exceptions"
      ],
      "cflags_cc!": [
        "-fno-exceptions",
        "-std=gnu++17"
      ],
      "cflags_cc": [
        "-std=c++17",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Werror=switch"
      ]
    }
  ]
}