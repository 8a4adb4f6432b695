#![no_main]
//! See `cellc::fuzzing::onnx_import`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cellc::fuzzing::onnx_import(data);
});
