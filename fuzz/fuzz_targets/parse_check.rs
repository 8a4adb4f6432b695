#![no_main]
//! See `cellc::fuzzing::parse_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cellc::fuzzing::parse_check(data);
});
