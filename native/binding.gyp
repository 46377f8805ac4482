{
  "targets": [
    {
      "target_name": "bpfproxy",
      "sources": [
        "src/addon.cc",
        "src/errors.cc",
        "src/object.cc",
        "src/map.cc",
        "src/program.cc",
        "src/attach.cc",
        "src/util.cc",
        "src/ipvs.cc",
        "src/ringbuf.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "cflags_cc": [ "-std=c++17", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Wno-unused-parameter" ],
      "include_dirs": [ "/usr/include/libnl3" ],
      "libraries": [ "-lbpf", "-lelf", "-lz", "-lnl-genl-3", "-lnl-3" ],
      "defines": [ "NAPI_VERSION=8" ]
    }
  ]
}
