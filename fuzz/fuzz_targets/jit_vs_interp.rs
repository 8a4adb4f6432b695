#![no_main]
//! See `cellc::fuzzing::jit_vs_interp`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cellc::fuzzing::jit_vs_interp(data);
});
