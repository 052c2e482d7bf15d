//! Writes the API server refuses: a 4xx is an outcome on the status with
//! the API's own message, a conflict is read again, anything else ends the
//! pass with an error (retried) and leaves the status alone.

use std::time::Duration;

use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::controller::Action;
use serde_json::json;

use super::fake::Repeat;
use super::world::*;
use crate::names::{ANN_SET, LABEL_SET_UID};
use crate::operator::error::{Error, PassError, Step};

#[tokio::test]
async fn a_refused_deployment_write_is_on_the_status_with_the_apis_message_and_retried_later() {
    for (code, reason, message) in [
        (
            422,
            "WriteInvalid",
            "Deployment.apps \"app\" is invalid: spec.template.spec.volumes[1].name: \
             Duplicate value: \"certpin-client-certificates\"",
        ),
        (
            403,
            "Forbidden",
            "deployments.apps \"app\" is forbidden: User \"system:serviceaccount:shop:operator\" \
             cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"shop\"",
        ),
        (
            413,
            "TooLarge",
            "Request entity too large: limit is 3145728",
        ),
    ] {
        let w = World::new();
        w.deployment("app", 1, &["mendix"]);
        w.create_set("s", json!({"app": {"deployment": "app"}}));
        w.fake.fail(
            Method::PATCH,
            "/deployments/app",
            code,
            message,
            Repeat::Once,
        );
        let action = w.pass_ok("s").await;
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(60)),
            "{code}: a refusal is retried now and then"
        );
        let s = w.set("s");
        assert_eq!(ready(&s), ("False".into(), reason.into()), "{code}");
        let applied = condition(&s, "Applied");
        assert_eq!(applied.reason, reason);
        let expected = format!("the API server refused a write ({code}): {message}");
        assert_eq!(condition(&s, "Ready").message, expected);
        assert_eq!(applied.message, expected);
        assert_eq!(s.status.as_ref().unwrap().applied_hash, None);
        assert!(
            records(&s).is_empty(),
            "{code}: recorded a refused workload"
        );
        assert!(unwired(&w.deployment_now("app")), "{code}");
        assert_eq!(w.warning(reason).as_deref(), Some(expected.as_str()));

        // The next pass (the refusal lifted) wires it.
        w.pass_ok("s").await;
        w.rolls_then_ready("s", "app").await;
        assert!(wired(&containers(&w.deployment_now("app"))[0]));
    }
}

#[tokio::test]
async fn a_conflict_on_the_conditional_claim_is_read_again_at_once() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.fake.fail(
        Method::PATCH,
        "/deployments/app",
        409,
        "Operation cannot be fulfilled on deployments.apps \"app\": the object has been modified; \
         please apply your changes to the latest version and try again",
        Repeat::Once,
    );
    let action = w.pass_ok("s").await;
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    let s = w.set("s");
    assert_eq!(ready(&s), ("False".into(), "WriteConflict".into()));
    assert!(condition(&s, "Ready").message.contains("(409)"));
    // The claim was conditional: the fake saw the resourceVersion.
    w.pass_ok("s").await;
    w.rolls_then_ready("s", "app").await;
    assert!(wired(&containers(&w.deployment_now("app"))[0]));
}

#[tokio::test]
async fn a_set_that_loses_the_race_for_a_deployment_reads_it_again_and_reports_the_conflict() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("theirs", json!({"app": {"deployment": "app"}}));
    w.create_set("mine", json!({"app": {"deployment": "app"}}));
    let theirs_uid = w.set("theirs").metadata.uid.unwrap();
    // Between certpin's read of the Deployment and its write, the pass of
    // the other set claims it.
    let uid = theirs_uid.clone();
    w.fake.after(Method::GET, "/deployments/app", move |st| {
        st.apply_as::<Deployment>(
            "certpin",
            NS,
            "app",
            json!({"metadata": {"name": "app", "annotations": {ANN_SET: "theirs"},
                "labels": {LABEL_SET_UID: uid}}}),
        )
    });
    let mark = w.fake.mark();
    w.pass_ok("mine").await;
    let s = w.set("mine");
    assert_eq!(ready(&s), ("False".into(), "WriteConflict".into()));
    let refused = w.fake.since(mark, |log| {
        log.iter()
            .filter(|l| l.path.ends_with("/deployments/app") && l.is_write())
            .map(|l| l.code)
            .collect::<Vec<_>>()
    });
    assert_eq!(refused, [409], "the claim was not conditional");
    assert_eq!(
        claim_uid(&w.deployment_now("app")).as_deref(),
        Some(theirs_uid.as_str())
    );

    let action = w.pass_ok("mine").await;
    let s = w.set("mine");
    assert_eq!(ready(&s), ("False".into(), "Conflict".into()));
    assert!(
        condition(&s, "Ready").message.contains("\"theirs\""),
        "{}",
        condition(&s, "Ready").message
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    assert_eq!(
        claim_uid(&w.deployment_now("app")).as_deref(),
        Some(theirs_uid.as_str()),
        "the loser took the Deployment over"
    );
}

#[tokio::test]
async fn a_server_error_ends_the_pass_for_a_retry_and_leaves_the_status_alone() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    let good = w.set("s").status;
    let wired_before = w.deployment_now("app");

    // A rotation, and an API server that fails the Deployment write.
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    w.fake.fail(
        Method::PATCH,
        "/deployments/app",
        500,
        "Internal error occurred: etcdserver: leader changed",
        Repeat::Always,
    );
    let mark = w.fake.mark();
    let failed = w
        .pass("s")
        .await
        .expect_err("a 500 did not end the pass with an error");
    assert!(
        failed
            .to_string()
            .starts_with(&format!("writing for {NS}/s: Kubernetes API:")),
        "the error names its step and set: {failed}"
    );
    let PassError {
        step: Step::Act,
        source: Error::Kube(kube::Error::Api(status)),
        ..
    } = failed
    else {
        panic!("not an API error of the write step: {failed:?}");
    };
    assert_eq!(status.code, 500);
    assert_eq!(w.set("s").status, good, "the status changed");
    let status_writes = w.fake.since(mark, |log| {
        log.iter()
            .filter(|l| l.path.ends_with("/status") || l.path.ends_with("/events"))
            .count()
    });
    assert_eq!(status_writes, 0, "a failed pass wrote a status or an Event");
    assert_eq!(w.deployment_now("app").spec, wired_before.spec);

    w.fake.clear_failures();
    w.pass_ok("s").await;
    w.rolls_then_ready("s", "app").await;
    let s = w.set("s");
    let rotated = s.status.as_ref().unwrap();
    assert_ne!(rotated.applied_hash, good.as_ref().unwrap().applied_hash);
    assert_eq!(
        rotated.certificates[0].key_algorithm.as_deref(),
        Some("EC P-384")
    );
    assert_eq!(
        template_hash(&w.deployment_now("app")),
        rotated.applied_hash,
        "the rotation rolled"
    );
}
