//! The reconcile request: a pass over an annotated set reads the inputs
//! again, reports what it found and echoes the request; with nothing
//! changed it writes nothing but the status.

use serde_json::json;

use super::world::*;
use crate::names::{ANN_FLUX_REQUESTED_AT, ANN_RECONCILE_REQUESTED};

async fn ready_set() -> World {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    w.pass_rolled_out("s", "app").await;
    assert!(is_ready(&w.set("s")));
    w
}

fn request(w: &World, key: &str, value: &str) {
    w.edit_set("s", json!({"metadata": {"annotations": {key: value}}}));
}

fn echoed(w: &World) -> Option<String> {
    w.set("s").status?.last_handled_reconcile_at
}

#[tokio::test]
async fn a_request_is_echoed_and_writes_nothing_else_when_nothing_changed() {
    let w = ready_set().await;
    let deployment = w.version_of_deployment("app");
    request(&w, ANN_RECONCILE_REQUESTED, "2026-01-02T03:04:05Z");
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert_eq!(echoed(&w).as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(
        w.writes_since(mark),
        ["PATCH clientcertificatesets/s/status apply certpin"]
    );
    assert_eq!(w.version_of_deployment("app"), deployment, "no restart");
    // Flux's annotation, later by its value, is the next request.
    request(&w, ANN_FLUX_REQUESTED_AT, "1767323046");
    w.pass_ok("s").await;
    assert_eq!(echoed(&w).as_deref(), Some("1767323046"));
}

#[tokio::test]
async fn a_requested_pass_reports_a_secret_changed_behind_its_back() {
    let w = ready_set().await;
    // No watch event recorded the change: only the pass's own read sees it.
    w.put_cert("openssl-ec256-modern.p12", b"not-the-password");
    request(&w, ANN_RECONCILE_REQUESTED, "now");
    w.pass_ok("s").await;
    let s = w.set("s");
    assert_eq!(ready(&s), ("False".into(), "WrongPassword".into()));
    assert_eq!(echoed(&w).as_deref(), Some("now"));
}
