#![no_main]
//! See `cellc::fuzzing::sequences`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cellc::fuzzing::sequences(data);
});
