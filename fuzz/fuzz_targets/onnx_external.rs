#![no_main]
//! See `cellc::fuzzing::onnx_external`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cellc::fuzzing::onnx_external(data);
});
