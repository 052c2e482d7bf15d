//! The quiet window: a change to an input while a pass waits supersedes it
//! (nothing is written; the pass that change triggers writes), and without
//! one the pass writes once the window has passed.

use std::time::Duration;

use http::Method;
use serde_json::json;

use super::world::*;
use crate::operator::memory::Key;

const WINDOW: Duration = Duration::from_millis(50);

/// A set wired to a rolled-out `app`, then its certificate rotated, as the
/// watch reports it (the change that begins a burst).
async fn rotated() -> (World, Option<String>) {
    let w = World::with_quiet(WINDOW);
    w.deployment("app", 1, &["mendix"]);
    w.create_set("s", json!({"app": {"deployment": "app"}}));
    w.pass_ok("s").await;
    w.pass_rolled_out("s", "app").await;
    assert!(is_ready(&w.set("s")));
    let hash = template_hash(&w.deployment_now("app"));
    w.put_cert("openssl-ec384-modern.p12", PASSWORD);
    touch(&w);
    (w, hash)
}

fn touch(w: &World) {
    w.ctx
        .memory
        .touch(&Key::set(NS, "s"), std::time::Instant::now(), w.ctx.quiet);
}

#[tokio::test]
async fn a_change_while_the_pass_waits_supersedes_it_and_nothing_is_written() {
    let (w, hash) = rotated().await;
    // The burst's next change arrives while the pass reads.
    let ctx = w.ctx.clone();
    w.fake.after(Method::GET, "/secrets/cert", move |_| {
        ctx.memory
            .touch(&Key::set(NS, "s"), std::time::Instant::now(), ctx.quiet)
    });
    let mark = w.fake.mark();
    w.pass_alone_ok("s").await;
    assert_eq!(template_hash(&w.deployment_now("app")), hash);
    assert_eq!(w.writes_since(mark), Vec::<String>::new());
}

#[tokio::test]
async fn without_a_change_the_pass_writes_after_the_window() {
    let (w, hash) = rotated().await;
    let mark = w.fake.mark();
    let started = std::time::Instant::now();
    w.pass_alone_ok("s").await;
    assert!(started.elapsed() >= WINDOW / 2, "the pass waited");
    assert_ne!(template_hash(&w.deployment_now("app")), hash, "restarted");
    let writes = w.writes_since(mark);
    let patches = |what: &str| {
        writes
            .iter()
            .filter(|l| l.starts_with("PATCH") && l.contains(what))
            .count()
    };
    assert_eq!(
        (patches("deployments/app"), patches("secrets/s-certpin")),
        (1, 1),
        "{writes:?}"
    );
}
