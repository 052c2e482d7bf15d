//! Bounded work: a crafted certificate file that is costly to decode (its
//! key derivation within the budget, so it is decoded, slowly) stalls no
//! other set. With the operator on one CPU and on two, an unrelated set's
//! rotation in another namespace goes through while it decodes, `/healthz`
//! answers throughout, the costly file ends `TooCostly` at the decode
//! deadline, and a restart with the file present serves at once. The
//! figures are printed (they are the test build's: the crypto is
//! unoptimized, which makes the crafted file slower, not faster).

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use certpin::resource::ClientCertificateSet;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::kube::{TestNamespace, wait_for, wait_until};
use support::operator::*;

const T: Duration = Duration::from_secs(120);

/// A PKCS12 file written by OpenSSL 3 with one encrypted key bag and its
/// MAC at `iterations` each, certificates unencrypted: within the budget
/// and the decoder's limits (1,000,000 per part), so it is decoded, slowly.
fn costly_file(iterations: u32, tag: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{tag}.p12"));
    let pem = |f: &str| format!("{}/tests/fixtures/pem/{f}", env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("openssl")
        .args(["pkcs12", "-export", "-certpbe", "NONE"])
        .args(["-iter", &iterations.to_string()])
        .args([
            "-inkey",
            &pem("ec256-sec1.key"),
            "-in",
            &pem("ec256-tls.crt"),
        ])
        .args(["-name", tag, "-passout", "pass:changeit", "-out"])
        .arg(&out)
        .status()
        .expect("openssl");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

fn set(name: &str, secret: &str) -> ClientCertificateSet {
    serde_json::from_value(json!({
        "apiVersion": "certpin.dev/v1alpha1", "kind": "ClientCertificateSet",
        "metadata": {"name": name},
        "spec": {"app": {"deployment": "app"}, "certificates": [{"name": "client",
            "pkcs12": {"secretName": secret, "key": "certificate.pfx"},
            "password": {"secretName": secret, "key": "password"}}]}
    }))
    .unwrap()
}

/// Polls `/healthz` every 200 ms until stopped; the slowest answer, and
/// whether any failed.
fn watch_health(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Duration, usize)> {
    std::thread::spawn(move || {
        let (mut worst, mut failures) = (Duration::ZERO, 0);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let ok = http_ok(&url);
            worst = worst.max(t.elapsed());
            failures += usize::from(!ok);
            std::thread::sleep(Duration::from_millis(200));
        }
        (worst, failures)
    })
}

async fn applied_hash(sets: &Api<ClientCertificateSet>, name: &str) -> Option<String> {
    sets.get(name).await.ok()?.status?.applied_hash
}

async fn a_costly_file_stalls_no_one_else_on(cpus: &str) {
    let tag = cpus.replace(',', "");
    let slow = TestNamespace::new(&format!("costly{tag}")).await;
    let other = TestNamespace::new(&format!("other{tag}")).await;
    install_crd(&slow.client).await;
    for ns in [&slow, &other] {
        put_cert_secret(ns).await;
        create_deployment(ns, &deployment("app", 1, &["mendix"])).await;
    }
    let both = format!("{},{}", slow.name, other.name);
    let mut op = Operator::start_pinned(
        &both,
        cpus,
        &[
            "--lease-namespace",
            &other.name,
            "--decode-deadline-seconds",
            "6",
        ],
    );
    let others: Api<ClientCertificateSet> = other.api();
    others
        .create(&PostParams::default(), &set("s", "cert"))
        .await
        .unwrap();
    wait_until(&others, "s", T, "the unrelated set Ready", ready).await;
    let before = applied_hash(&others, "s").await;

    // Two distinct costly files (two decodes in flight), then at once a
    // rotation of the unrelated set's Secret.
    let slows: Api<ClientCertificateSet> = slow.api();
    for i in 0..2 {
        let name = format!("costly-{i}");
        let file = costly_file(1_000_000, &name);
        put_secret(
            &slow,
            &name,
            &[("certificate.pfx", &file), ("password", b"changeit")],
            None,
        )
        .await;
        slows
            .create(&PostParams::default(), &set(&name, &name))
            .await
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let health = watch_health(op.healthz_url(), stop.clone());
    let rotated = Instant::now();
    put_secret(
        &other,
        "cert",
        &[
            (
                "certificate.pfx",
                &fixture("pkcs12/openssl-ec384-modern.p12"),
            ),
            ("password", b"changeit"),
        ],
        None,
    )
    .await;
    wait_for(T, "the unrelated rotation applied", || {
        let (others, before) = (others.clone(), before.clone());
        async move {
            applied_hash(&others, "s")
                .await
                .is_some_and(|h| Some(h) != before)
        }
    })
    .await;
    let rotation = rotated.elapsed();
    for i in 0..2 {
        let s = wait_until(
            &slows,
            &format!("costly-{i}"),
            T,
            "TooCostly",
            not_ready_with("TooCostly"),
        )
        .await;
        // At the deadline, not by the budget: these files were decoded.
        let message = &s.status.unwrap().conditions[0].message;
        assert!(message.contains("took longer than 6 s"), "{message}");
    }
    stop.store(true, Ordering::Relaxed);
    let (worst_health, failures) = health.join().unwrap();
    eprintln!(
        "cpus {cpus}: unrelated rotation applied in {:.2} s while two costly files decoded; \
         slowest /healthz {:.0} ms, {failures} failed",
        rotation.as_secs_f64(),
        worst_health.as_secs_f64() * 1000.0
    );
    assert_eq!(failures, 0, "/healthz failed while files decoded");
    // Below one decode deadline: the rotation never waited for a costly
    // file's slot (it would have waited at least until that deadline).
    assert!(
        rotation < Duration::from_secs(6),
        "the unrelated rotation waited {rotation:?}"
    );

    // A restart with the files present: healthy at once, no crash loop,
    // and the costly files are not what it waits on.
    op.restart();
    let started = Instant::now();
    wait_for(Duration::from_secs(10), "/healthz after a restart", || {
        let url = op.healthz_url();
        async move {
            tokio::task::spawn_blocking(move || http_ok(&url))
                .await
                .unwrap_or(false)
        }
    })
    .await;
    eprintln!(
        "cpus {cpus}: /healthz answered {:.2} s after a restart",
        started.elapsed().as_secs_f64()
    );
    assert!(!op.wait_exit(Duration::from_secs(6)), "the operator exited");
}

#[tokio::test]
async fn a_costly_file_stalls_no_one_else_on_one_cpu() {
    a_costly_file_stalls_no_one_else_on("0").await;
}

#[tokio::test]
async fn a_costly_file_stalls_no_one_else_on_two_cpus() {
    a_costly_file_stalls_no_one_else_on("0,1").await;
}
