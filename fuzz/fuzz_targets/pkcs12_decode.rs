#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| certpin::fuzzing::pkcs12_decode(data));
