//! Following a rollout belongs to the set that wires the workload: another
//! set that names it (refused as a conflict) or its deletion cannot stop it.

use serde_json::json;

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
