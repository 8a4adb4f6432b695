#![no_main]
//! See `cellc::fuzzing::run_shapes`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cellc::fuzzing::run_shapes(data);
});
