#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| certpin::fuzzing::ca_bundle(data));
