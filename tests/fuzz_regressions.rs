//! Every input the fuzzer found (fuzz/regressions/<target>/) is replayed
//! through the same function the fuzz target calls.

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = format!("{}/fuzz/regressions/{target}", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let data = std::fs::read(entry.path()).unwrap();
        f(&data);
        n += 1;
    }
    n
}

#[test]
fn fuzz_regressions_replay_without_panic() {
    replay("pkcs12_decode", certpin::fuzzing::pkcs12_decode);
    replay("pem_decode", certpin::fuzzing::pem_decode);
    replay("ca_bundle", certpin::fuzzing::ca_bundle);
    let n = replay("render_settings", certpin::fuzzing::render_settings);
    assert!(n >= 1, "the render_settings regression inputs are missing");
}
