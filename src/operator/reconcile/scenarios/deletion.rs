//! Deleting a set: every workload that carries its claim is unwired, then
//! the finalizer goes; a refused unwire does not hold the deletion.

use http::Method;
use serde_json::json;

use super::fake::Repeat;
use super::world::*;
use crate::operator::error::{Error, PassError, Step};

#[tokio::test]
async fn deletion_unwires_every_claimed_workload_then_releases_the_finalizer() {
    let w = World::new();
    w.deployment("one", 1, &["mendix"]);
    w.deployment("two", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "one"}}));
    w.pass_ok("s").await;
    // Retargeted, and the pass cut short after wiring "two": "one" keeps
    // the claim although the status does not say so.
    w.edit_set("s", json!({"spec": {"app": {"deployment": "two"}}}));
    w.fake.fail(
        Method::PATCH,
        "/deployments/one",
        500,
        "etcdserver: request timed out",
        Repeat::Once,
    );
    let Err(PassError {
        step: Step::Act,
        source: Error::Kube(kube::Error::Api(s)),
        ..
    }) = w.pass("s").await
    else {
        panic!("a 500 on the unwire did not end the pass with an error");
    };
    assert_eq!(s.code, 500);
    let uid = w.set("s").metadata.uid;
    assert_eq!(claim_uid(&w.deployment_now("one")), uid);
    assert_eq!(claim_uid(&w.deployment_now("two")), uid);

    w.delete_set("s");
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    for name in ["one", "two"] {
        let d = w.deployment_now(name);
        assert!(unwired(&d), "{name} still wired");
        assert_eq!(replicas(&d), Some(1));
    }
    assert!(w.set_opt("s").is_none(), "the finalizer was not released");
    let writes = w.writes_since(mark);
    assert_eq!(
        writes.last().map(String::as_str),
        Some("PATCH clientcertificatesets/s json-patch -"),
        "the finalizer goes last: {writes:?}"
    );
    assert!(w.events().iter().all(|(t, _, _)| t != "Warning"));
}

#[tokio::test]
async fn an_unwire_the_api_server_refuses_is_a_warning_and_does_not_hold_the_deletion() {
    for (code, message) in [
        (
            403,
            "deployments.apps \"app\" is forbidden: User \"system:serviceaccount:certpin:certpin\" \
             cannot patch resource \"deployments\" in API group \"apps\"",
        ),
        (
            422,
            "admission webhook \"policy.example\" denied the request: the template is frozen",
        ),
    ] {
        let w = World::new();
        w.deployment("app", 1, &["mendix"]);
        w.create_set("s", json!({"app": {"deployment": "app"}}));
        w.pass_ok("s").await;
        w.delete_set("s");
        w.fake.fail(
            Method::PATCH,
            "/deployments/app",
            code,
            message,
            Repeat::Always,
        );
        w.pass_ok("s").await;
        assert!(w.set_opt("s").is_none(), "{code}: the finalizer was kept");
        assert!(
            wired(&containers(&w.deployment_now("app"))[0]),
            "{code}: the refused unwire changed the Deployment"
        );
        let note = w
            .warning("UnwireFailed")
            .unwrap_or_else(|| panic!("{code}: no UnwireFailed Warning"));
        assert!(
            note.contains(&format!("({code})")) && note.contains(message),
            "{code}: not the API's answer: {note}"
        );
        assert!(note.contains("\"app\""), "{note}");
    }
}

#[tokio::test]
async fn a_set_deleted_with_a_failing_read_keeps_its_finalizer_for_the_retry() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    w.delete_set("s");
    w.fake.fail(
        Method::GET,
        "/deployments",
        503,
        "the server is currently unable to handle the request",
        Repeat::Once,
    );
    assert!(w.pass("s").await.is_err());
    assert!(w.set_opt("s").is_some(), "released without unwiring");
    assert!(wired(&containers(&w.deployment_now("app"))[0]));
    w.pass_ok("s").await;
    assert!(w.set_opt("s").is_none());
    assert!(unwired(&w.deployment_now("app")));
}
