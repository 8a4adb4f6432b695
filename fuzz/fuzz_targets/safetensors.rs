#![no_main]
//! See `cellc::fuzzing::safetensors`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cellc::fuzzing::safetensors(data);
});
