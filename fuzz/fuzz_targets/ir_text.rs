#![no_main]
//! See `cellc::fuzzing::ir_text`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cellc::fuzzing::ir_text(data);
});
