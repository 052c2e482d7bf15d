//! Validation throughput over a directory of PKCS12 files, side by side with
//! `openssl pkcs12 -noout` on the same files, measured in the same run.
//!
//!   cargo bench --bench validate [-- DIR PASSWORD]
//!
//! Default: every valid fixture in tests/fixtures/pkcs12 whose password is
//! `changeit`. Three figures, each the median of 7 rounds:
//!   certpin in-process   decode + judge, no process start (what the operator does)
//!   certpin CLI          `certpin validate FILE` once per file
//!   openssl CLI          `openssl pkcs12 -in FILE -noout [-legacy]` once per file
//! and the ratios of the two CLIs (same process-per-file shape).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use certpin::pkcs12::{self, Policy};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if !raw.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without --bench.
        println!("validate benchmark: run it with `cargo bench --bench validate`");
        return;
    }
    let args: Vec<String> = raw.into_iter().filter(|a| a != "--bench").collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (files, password): (Vec<PathBuf>, String) = if args.len() >= 2 {
        let mut f: Vec<PathBuf> = std::fs::read_dir(&args[0])
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        f.sort();
        (f, args[1].clone())
    } else {
        let dir = root.join("tests/fixtures/pkcs12");
        let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).unwrap();
        let f = manifest
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .filter(|f| f[1] == "changeit" && f[2] == "ok")
            .map(|f| dir.join(f[0]))
            .collect();
        (f, "changeit".into())
    };
    let bin = root.join("target/release/certpin");
    assert!(
        bin.exists(),
        "build the release binary first: cargo build --release"
    );
    let data: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let legacy: Vec<bool> = data
        .iter()
        .map(|d| {
            pkcs12::inspect(d)
                .map(|s| s.profile() != "modern")
                .unwrap_or(false)
        })
        .collect();
    println!("{} files, 7 rounds each, medians", files.len());

    let rounds = 7;
    let mut inproc = Vec::new();
    let mut cli = Vec::new();
    let mut ossl = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for d in &data {
            let decoded = pkcs12::decode_pkcs12(d, &password).unwrap();
            pkcs12::judge(
                &decoded,
                &Policy {
                    jvm_strict: false,
                    ..Policy::at(chrono::Utc::now())
                },
            )
            .unwrap();
        }
        inproc.push(t.elapsed());

        let t = Instant::now();
        for f in &files {
            let ok = Command::new(&bin)
                .args([
                    "validate",
                    f.to_str().unwrap(),
                    "--password-env",
                    "BENCH_PW",
                ])
                .env("BENCH_PW", &password)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(ok.success(), "{}", f.display());
        }
        cli.push(t.elapsed());

        let t = Instant::now();
        for (f, legacy) in files.iter().zip(&legacy) {
            let mut cmd = Command::new("openssl");
            cmd.args([
                "pkcs12",
                "-in",
                f.to_str().unwrap(),
                "-noout",
                "-passin",
                "env:BENCH_PW",
            ]);
            if *legacy {
                cmd.arg("-legacy");
            }
            let ok = cmd
                .env("BENCH_PW", &password)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(ok.success(), "openssl refused {}", f.display());
        }
        ossl.push(t.elapsed());
    }
    let (inproc, cli, ossl) = (median(inproc), median(cli), median(ossl));
    let per = |d: Duration| d.as_secs_f64() * 1000.0 / files.len() as f64;
    println!(
        "certpin in-process : {:8.2} ms total, {:6.2} ms/file",
        inproc.as_secs_f64() * 1000.0,
        per(inproc)
    );
    println!(
        "certpin validate   : {:8.2} ms total, {:6.2} ms/file",
        cli.as_secs_f64() * 1000.0,
        per(cli)
    );
    println!(
        "openssl pkcs12     : {:8.2} ms total, {:6.2} ms/file",
        ossl.as_secs_f64() * 1000.0,
        per(ossl)
    );
    println!(
        "ratio certpin validate / openssl pkcs12 = {:.2}",
        cli.as_secs_f64() / ossl.as_secs_f64()
    );
    println!(
        "ratio certpin in-process / openssl pkcs12 = {:.2}",
        inproc.as_secs_f64() / ossl.as_secs_f64()
    );
}
