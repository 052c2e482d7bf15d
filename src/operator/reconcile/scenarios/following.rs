//! Following a rollout belongs to the set that wires the workload: another
//! set that names it (refused as a conflict) or its deletion cannot stop it.
//! The passes a rollout triggers read the workload again, and the inputs
//! only when one changed.

use serde_json::json;

use super::fake::Repeat;
use super::world::*;

#[tokio::test]
async fn another_sets_pass_or_deletion_does_not_stop_the_owners_following() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    assert!(w.follows("s", "app"), "the owner follows its rollout");
    // A second set naming the same app is refused, and then deleted.
    w.create_set("t", json!({"app": {"deployment": "app"}}));
    w.pass_ok("t").await;
    assert_eq!(ready(&w.set("t")).1, "Conflict");
    assert!(w.follows("s", "app"), "after the other set's pass");
    w.delete_set("t");
    w.pass_ok("t").await;
    assert!(w.follows("s", "app"), "after the other set's deletion");
    w.pass_rolled_out("s", "app").await;
    assert!(!w.follows("s", "app"), "the owner's rollout is done");
}

/// The reads of the passes since `mark`, by path.
fn reads_since(w: &World, mark: usize) -> Vec<String> {
    w.fake.since(mark, |log| {
        log.iter()
            .filter(|l| l.method == http::Method::GET)
            .map(describe)
            .collect()
    })
}

#[tokio::test]
async fn a_pass_the_rollout_triggers_reads_the_workload_not_the_inputs() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    let mark = w.fake.mark();
    w.pass_rolled_out("s", "app").await;
    assert!(is_ready(&w.set("s")), "{:?}", ready(&w.set("s")));
    assert_eq!(reads_since(&w, mark), ["GET deployments/app - -"]);
    // Done following: the next pass (a resync) reads everything again.
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    let reads = reads_since(&w, mark);
    assert!(
        reads.contains(&"GET secrets/cert - -".to_string()),
        "{reads:?}"
    );
}

#[tokio::test]
async fn an_input_changed_or_a_spec_edited_during_a_rollout_is_read_afresh() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    let first = w.set("s").status.unwrap().applied_hash;
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert!(reads_since(&w, mark).contains(&"GET secrets/cert - -".to_string()));
    let second = w.set("s").status.unwrap().applied_hash;
    assert_ne!(first, second, "the rotation is applied");
    assert!(w.follows("s", "app"));
    w.edit_set("s", json!({"spec": {"restart": "Manual"}}));
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert!(reads_since(&w, mark).contains(&"GET secrets/cert - -".to_string()));
}

#[tokio::test]
async fn a_failed_pass_leaves_the_next_to_read_everything() {
    let w = World::new();
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    w.fake.fail(
        http::Method::GET,
        "/deployments/app",
        500,
        "etcdserver: leader changed",
        Repeat::Once,
    );
    assert!(w.pass("s").await.is_err());
    w.roll_out("app");
    let mark = w.fake.mark();
    w.pass_ok("s").await;
    assert!(reads_since(&w, mark).contains(&"GET secrets/cert - -".to_string()));
    assert!(is_ready(&w.set("s")));
}
