//! Reads with a mark (src/operator/freshness.rs) against the real API
//! server: answered by its watch cache, not etcd; never older than a write
//! certpin saw; and still answered when the mark is ahead of that cache.
//!
//! The API server's counters are global, and the test bed is shared: the
//! namespaces of earlier tests are still being torn down (each deleted
//! Secret is an etcd read). So every count here is a lower bound that only
//! this test's requests can reach, or a count of 504s, which only a mark
//! ahead of the cache produces.

mod support;

use certpin::testing::freshness::{self, Mark};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use support::kube::TestNamespace;

async fn write(api: &Api<Secret>, name: &str, value: &str) -> Secret {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"v": value},
    });
    api.patch(
        name,
        &PatchParams::apply("certpin-tests").force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap()
}

fn value(s: &Secret) -> Vec<u8> {
    let data = s.data.as_ref().expect("data");
    let ByteString(v) = data.get("v").expect("key v");
    v.clone()
}

/// The tests here count the API server's etcd reads: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The sum of the API server's counters named `metric` whose labels include
/// all of `labels`.
async fn counter(client: &Client, metric: &str, labels: &[&str]) -> u64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The API server's count of etcd reads of Secrets.
async fn etcd_secret_gets(client: &Client) -> u64 {
    let labels = ["operation=\"get\"", "resource=\"secrets\""];
    counter(client, "etcd_requests_total", &labels).await
}

/// The API server's count of Secret reads answered by its watch cache at a
/// resourceVersion above 0 (each is observed once in this histogram,
/// whether it waited or not).
async fn cached_secret_reads(client: &Client) -> u64 {
    let labels = ["resource=\"secrets\""];
    counter(
        client,
        "apiserver_watch_cache_read_wait_seconds_count",
        &labels,
    )
    .await
}

/// The API server's count of 504 answers to GETs of Secrets.
async fn secret_get_timeouts(client: &Client) -> u64 {
    let labels = ["code=\"504\"", "resource=\"secrets\"", "verb=\"GET\""];
    counter(client, "apiserver_request_total", &labels).await
}

/// certpin's own client (its retry policy is part of what is tested).
async fn secrets(ns: &TestNamespace) -> Api<Secret> {
    let client = certpin::testing::client().await.unwrap();
    Api::namespaced(client, &ns.name)
}

#[tokio::test]
async fn reads_with_a_mark_see_every_write_and_do_not_reach_etcd() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("freshness").await;
    let api = secrets(&ns).await;
    let mark = Mark::default();

    // Each read right after a write (its version observed) sees that write.
    for i in 0..20 {
        let written = write(&api, "s", &format!("v{i}")).await;
        mark.observe_object(&written);
        let read = freshness::get_opt(&api, "s", &mark).await.unwrap();
        assert_eq!(
            value(&read.expect("the Secret")),
            format!("v{i}").as_bytes()
        );
    }
    assert!(
        freshness::get_opt(&api, "absent", &mark)
            .await
            .unwrap()
            .is_none()
    );

    // Without a mark: quorum reads, one etcd read each (this also shows the
    // counter counts them).
    let before = etcd_secret_gets(&ns.client).await;
    for _ in 0..50 {
        freshness::get_opt(&api, "s", &Mark::default())
            .await
            .unwrap();
    }
    let quorum = etcd_secret_gets(&ns.client).await - before;
    assert!(quorum >= 50, "50 quorum reads counted {quorum} etcd reads");

    // With the mark: the watch cache answers each read, and none of them
    // waited in vain (a 504), so none went on to etcd.
    let timeouts = secret_get_timeouts(&ns.client).await;
    let before = cached_secret_reads(&ns.client).await;
    for _ in 0..50 {
        freshness::get_opt(&api, "s", &mark).await.unwrap();
    }
    let cached = cached_secret_reads(&ns.client).await - before;
    assert!(
        cached >= 50,
        "50 reads with a mark: {cached} from the cache"
    );
    assert_eq!(secret_get_timeouts(&ns.client).await, timeouts);
}

#[tokio::test]
async fn a_mark_ahead_of_the_cache_falls_back_to_a_quorum_read() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("freshness").await;
    let api = secrets(&ns).await;
    write(&api, "s", "current").await;
    let mark = Mark::default();
    // Far beyond any revision the test bed reaches: the cache answers 504
    // "Too large resource version" after its wait.
    mark.observe(Some("999999999999"));
    let timeouts = secret_get_timeouts(&ns.client).await;
    let read = freshness::get_opt(&api, "s", &mark).await.unwrap();
    assert_eq!(value(&read.expect("the Secret")), b"current");
    // One 504: the client did not ask the cache again (kube's policy would,
    // up to 15 times).
    assert_eq!(secret_get_timeouts(&ns.client).await - timeouts, 1);
    // The mark started over from the object read: the next reads are
    // answered by the cache without another wait for an unreachable version.
    let before = cached_secret_reads(&ns.client).await;
    for _ in 0..20 {
        assert!(
            freshness::get_opt(&api, "absent", &mark)
                .await
                .unwrap()
                .is_none()
        );
    }
    let cached = cached_secret_reads(&ns.client).await - before;
    assert!(
        cached >= 20,
        "20 reads after the fallback: {cached} from the cache"
    );
    assert_eq!(secret_get_timeouts(&ns.client).await - timeouts, 1);
}
