{
  # The CPU addon. Builds with nothing but Node, Python, make and a C++17 compiler: the BLAS is
  # dlopen'ed at run time (native/cpu/blas.cpp), never linked, and the SIMD kernels are compiled
  # per function with target attributes and chosen at run time, so one binary runs on any x86-64.
  "targets": [
    {
      "target_name": "fused_lora",
      "sources": [
        "native/napi/env.cpp",
        "native/napi/fields.cpp",
        "native/addon/addon.cpp",
        "native/addon/workers.cpp",
        "native/addon/gemm_entry.cpp",
        "native/addon/lora_entry.cpp",
        "native/addon/multi_lora_entry.cpp",
        "native/addon/train_entry.cpp",
        "native/cpu/isa.cpp",
        "native/cpu/threads.cpp",
        "native/cpu/blas.cpp",
        "native/cpu/gemm.cpp",
        "native/cpu/builtin_gemm/sgemm.cpp",
        "native/cpu/builtin_gemm/plan.cpp",
        "native/cpu/builtin_gemm/kernels.cpp",
        "native/cpu/builtin_gemm/driver.cpp",
        "native/cpu/builtin_gemm/pack.cpp",
        "native/cpu/builtin_gemm/gemv.cpp",
        "native/cpu/builtin_gemm/dot.cpp",
        "native/cpu/builtin_gemm/scratch.cpp",
        "native/cpu/builtin_gemm/wgemm.cpp",
        "native/cpu/builtin_gemm/wdecode.cpp",
        "native/cpu/builtin_gemm/wgemv.cpp",
        "native/cpu/quant.cpp",
        "native/cpu/lora.cpp",
        "native/cpu/multi_lora.cpp",
        "native/cpu/rank_r.cpp",
        "native/cpu/dropout.cpp",
        "native/cpu/merge.cpp",
        "native/cpu/optim.cpp",
        "native/cpu/losses.cpp",
        "native/cpu/activations.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/include",
        "native"
      ],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++14", "-std=gnu++1y", "-std=gnu++17"],
      "libraries": ["-ldl", "-pthread"],
      "conditions": [
        ["OS=='mac'", {
          "xcode_settings": {
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "GCC_OPTIMIZATION_LEVEL": "3",
            "MACOSX_DEPLOYMENT_TARGET": "11.0"
          }
        }]
      ]
    }
  ]
}
