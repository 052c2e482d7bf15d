//! The quiet window around the early write of a rotation: a change that
//! lands while the rendered objects are being written supersedes the pass
//! (they are put back, the workload is not written); without one, the
//! workload follows once the window has passed.

use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::world::*;

const WINDOW: Duration = Duration::from_millis(20);

/// A set wired to a rolled-out `app`, then its certificate rotated, as the
/// watch reports it (the change that begins a burst).
async fn rotated() -> (World, Option<String>, Secret) {
    let w = World::with_quiet(WINDOW);
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    w.pass_rolled_out("s", "app").await;
    assert!(is_ready(&w.set("s")));
    let hash = template_hash(&w.deployment_now("app"));
    let rendered = w.secret("s-certpin").expect("the rendered Secret");
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    w.ctx.waits.touched(NS, "s");
    (w, hash, rendered)
}

/// The Deployment's and the rendered Secret's patches since `mark`.
fn patches(w: &World, mark: usize) -> (usize, usize) {
    let writes = w.writes_since(mark);
    let count = |what: &str| {
        writes
            .iter()
            .filter(|l| l.starts_with("PATCH") && l.contains(what))
            .count()
    };
    (count("deployments/"), count("secrets/s-certpin"))
}

#[tokio::test]
async fn a_change_during_the_early_write_supersedes_the_pass() {
    let (w, hash, rendered) = rotated().await;
    // The burst's next change arrives while the early write is in flight.
    let ctx = w.ctx.clone();
    w.fake.after(Method::PATCH, "/secrets/s-certpin", move |_| {
        ctx.waits.touched(NS, "s")
    });
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    assert_eq!(
        template_hash(&w.deployment_now("app")),
        hash,
        "the app is not restarted for a change that was superseded"
    );
    assert_eq!(
        patches(&w, mark),
        (0, 2),
        "no Deployment write; the Secret written early, then put back: {:?}",
        w.writes_since(mark)
    );
    assert_eq!(
        w.secret("s-certpin").expect("the rendered Secret").data,
        rendered.data,
        "the rendering the pods run"
    );
}

#[tokio::test]
async fn after_the_early_write_and_the_window_the_workload_follows() {
    let (w, hash, _) = rotated().await;
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    assert_ne!(template_hash(&w.deployment_now("app")), hash, "restarted");
    assert_eq!(
        patches(&w, mark),
        (1, 1),
        "one Deployment write; the Secret written once, early: {:?}",
        w.writes_since(mark)
    );
}
