#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| certpin::fuzzing::render_settings(data));
