# The CPU addon's node-gyp build, included by the repository's binding.gyp (zotune_root ".") and by
# native/binding.gyp (zotune_root "..", the source build of an installed package: npm adds an
# implicit `node-gyp rebuild` for a binding.gyp at a package's root, so the package ships none
# there). prebuildify drives the root one for published binaries.
# Sources come from native/sources.json, shared with CMakeLists.txt; gyp-sources.js prints them
# relative to the folder gyp runs in.
# ISA flags apply only to the avx2 group (-mavx2 -mfma -mf16c) and the avx512 group (AVX-512 F, BW,
# VL, VNNI), each compiled as its own library and reached only through the runtime dispatch.
{
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-O3", "-ffp-contract=off", "-fno-math-errno", "-fvisibility=hidden", "-fPIC"],
    "defines": ["NAPI_VERSION=8", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"]
  },
  "targets": [
    {
      "target_name": "zotune_avx2",
      "type": "static_library",
      "sources": ["<!@(node <(zotune_root)/native/gyp-sources.js avx2)"],
      "conditions": [["target_arch=='x64'", {"cflags_cc": ["-mavx2", "-mfma", "-mf16c"]}]]
    },
    {
      "target_name": "zotune_avx512",
      "type": "static_library",
      "sources": ["<!@(node <(zotune_root)/native/gyp-sources.js avx512)"],
      "conditions": [["target_arch=='x64'", {"cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"]}]]
    },
    {
      "target_name": "zotune",
      "sources": [
        "<!@(node <(zotune_root)/native/gyp-sources.js core)",
        "<!@(node <(zotune_root)/native/gyp-sources.js addon)"
      ],
      "dependencies": [
        "zotune_avx2",
        "zotune_avx512",
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except_all"
      ]
    }
  ]
}
