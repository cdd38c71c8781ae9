//! Does this CPU have the vector instructions this build's llama.cpp was compiled with?
//!
//! The `llama-cpp-sys-2` build compiles ggml's CPU backend with `GGML_NATIVE=OFF`, which on
//! x86-64 turns on SSE4.2, AVX, AVX2, FMA, F16C and BMI2 (x86-64-v3, Intel Haswell 2013+,
//! AMD Excavator 2015+, Zen). On a CPU without them llama.cpp would die of an illegal
//! instruction mid-way; [`missing_features`] lets `offgrid run` refuse cleanly first.
//! ggml reports what it was compiled with (`ggml_cpu_has_*` are compile-time answers on
//! x86); the standard library detects what the CPU has.
//! Known gap: a C++ static initialiser compiled with AVX could still fault before `main`
//! on a pre-AVX CPU; other architectures are not checked.

/// The instruction-set extensions ggml was compiled with that this CPU lacks.
pub fn missing_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use llama_cpp_sys_2 as sys;
        // SAFETY: these ggml functions take no arguments and only return a constant.
        let built: [(&'static str, bool, bool); 9] = unsafe {
            [
                (
                    "SSE3",
                    sys::ggml_cpu_has_sse3() != 0,
                    std::arch::is_x86_feature_detected!("sse3"),
                ),
                (
                    "SSSE3",
                    sys::ggml_cpu_has_ssse3() != 0,
                    std::arch::is_x86_feature_detected!("ssse3"),
                ),
                (
                    "AVX",
                    sys::ggml_cpu_has_avx() != 0,
                    std::arch::is_x86_feature_detected!("avx"),
                ),
                (
                    "AVX2",
                    sys::ggml_cpu_has_avx2() != 0,
                    std::arch::is_x86_feature_detected!("avx2"),
                ),
                (
                    "FMA",
                    sys::ggml_cpu_has_fma() != 0,
                    std::arch::is_x86_feature_detected!("fma"),
                ),
                (
                    "F16C",
                    sys::ggml_cpu_has_f16c() != 0,
                    std::arch::is_x86_feature_detected!("f16c"),
                ),
                (
                    "BMI2",
                    sys::ggml_cpu_has_bmi2() != 0,
                    std::arch::is_x86_feature_detected!("bmi2"),
                ),
                (
                    "AVX512F",
                    sys::ggml_cpu_has_avx512() != 0,
                    std::arch::is_x86_feature_detected!("avx512f"),
                ),
                (
                    "AVX512-VNNI",
                    sys::ggml_cpu_has_avx512_vnni() != 0,
                    std::arch::is_x86_feature_detected!("avx512vnni"),
                ),
            ]
        };
        built
            .iter()
            .filter(|(_, compiled, present)| *compiled && !*present)
            .map(|(name, _, _)| *name)
            .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// The extensions ggml was compiled with (for `--verbose` and reports).
pub fn compiled_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        use llama_cpp_sys_2 as sys;
        // SAFETY: as above.
        let all: [(&'static str, bool); 7] = unsafe {
            [
                ("SSE3", sys::ggml_cpu_has_sse3() != 0),
                ("AVX", sys::ggml_cpu_has_avx() != 0),
                ("AVX2", sys::ggml_cpu_has_avx2() != 0),
                ("FMA", sys::ggml_cpu_has_fma() != 0),
                ("F16C", sys::ggml_cpu_has_f16c() != 0),
                ("BMI2", sys::ggml_cpu_has_bmi2() != 0),
                ("AVX512F", sys::ggml_cpu_has_avx512() != 0),
            ]
        };
        all.iter().filter(|(_, c)| *c).map(|(n, _)| *n).collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}
