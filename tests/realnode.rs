//! The mission end to end, in real containers on the test bed's real node
//! (scripts/realnode; scripts/test and .ci/run bring it up): certpin
//! installed by `helm install` of the unmodified chart, its image built by
//! scripts/images as the Dockerfile describes it; a JVM app
//! (tests/realnode/app/Client.java) that reads the MXRUNTIME_* settings the
//! way the Mendix runtime does and calls four endpoints over mutual TLS;
//! the partners (Partner.java) in the same pod on loopback, each trusting
//! only its own client CA and logging the subject it was shown.
//!
//! Without the real node these tests fail with a message saying how to
//! start it; CERTPIN_TESTBED_REAL_NODE=0 leaves them out on purpose (each
//! says so).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use certpin::resource::ClientCertificateSet;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use support::kube::{TestNamespace, rollout_complete, wait_for, wait_until};
use support::operator::{install_crd, ready};
use support::realnode::*;

const T: Duration = Duration::from_secs(180);

/// A namespace with the mission's Secrets and ConfigMap, certpin installed
/// by the chart to manage it, the app's workload and the set.
struct Mission {
    node: RealNode,
    ns: TestNamespace,
    certpin: Installed,
    app: String,
}

enum Kind {
    Deployment { replicas: i32, min_ready: i32 },
    StatefulSet { replicas: i32 },
}

impl Mission {
    async fn start(node: RealNode, prefix: &str, kind: Kind, restart: &str) -> Mission {
        let ns = TestNamespace::new(prefix).await;
        install_crd(&ns.client).await;
        put_mission_material(&ns).await;
        let app = "shop".to_string();
        let workload = match kind {
            Kind::Deployment {
                replicas,
                min_ready,
            } => {
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": {"name": app},
                    "spec": {
                        "replicas": replicas,
                        "minReadySeconds": min_ready,
                        "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                        "selector": {"matchLabels": {"app": app}},
                        "template": app_template(&app, 2)
                    }
                }))
                .unwrap();
                ns.api::<Deployment>()
                    .create(&PostParams::default(), &d)
                    .await
                    .unwrap();
                ("deployment", app.as_str())
            }
            Kind::StatefulSet { replicas } => {
                let s: StatefulSet = serde_json::from_value(json!({
                    "metadata": {"name": app},
                    "spec": {
                        "replicas": replicas,
                        "serviceName": app,
                        "podManagementPolicy": "Parallel",
                        "selector": {"matchLabels": {"app": app}},
                        "template": app_template(&app, 2)
                    }
                }))
                .unwrap();
                ns.api::<StatefulSet>()
                    .create(&PostParams::default(), &s)
                    .await
                    .unwrap();
                ("statefulSet", app.as_str())
            }
        };
        let certpin = Installed::new(&ns, &[]).await;
        let set: ClientCertificateSet =
            serde_json::from_value(mission_set("production", workload, restart)).unwrap();
        ns.api::<ClientCertificateSet>()
            .create(&PostParams::default(), &set)
            .await
            .unwrap();
        let m = Mission {
            node,
            ns,
            certpin,
            app,
        };
        m.wait_set("Ready", ready).await;
        m.wait_all_wired().await;
        m
    }

    /// certpin has applied a rendering other than `old`: the set's
    /// appliedHash names it and the workload's pod template carries it
    /// (the restart has begun; the set is Ready only once it is done).
    async fn wait_applied(&self, old: &str) -> ClientCertificateSet {
        let old = old.to_string();
        let set = self
            .wait_set("a new rendering applied", move |s| {
                s.and_then(|s| s.status.as_ref())
                    .and_then(|st| st.applied_hash.as_ref())
                    .is_some_and(|h| *h != old)
            })
            .await;
        let want = set.status.clone().unwrap().applied_hash.unwrap();
        wait_for(
            T,
            "the workload's template to carry the new rendering",
            || {
                let want = want.clone();
                async move {
                    let annotations = match self
                        .ns
                        .api::<Deployment>()
                        .get_opt(&self.app)
                        .await
                        .unwrap()
                    {
                        Some(d) => {
                            d.spec
                                .unwrap()
                                .template
                                .metadata
                                .unwrap_or_default()
                                .annotations
                        }
                        None => {
                            self.ns
                                .api::<StatefulSet>()
                                .get(&self.app)
                                .await
                                .unwrap()
                                .spec
                                .unwrap()
                                .template
                                .metadata
                                .unwrap_or_default()
                                .annotations
                        }
                    };
                    annotations.and_then(|a| a.get("certpin.dev/config-hash").cloned())
                        == Some(want)
                }
            },
        )
        .await;
        set
    }

    /// Waits until the app runs exactly one pod, Ready and not going away,
    /// other than `old`; its name.
    async fn one_pod_other_than(&self, old: &str) -> String {
        wait_for(T, "one new app pod, and the old one gone", || async {
            let pods = self.pods().await;
            pods.len() == 1 && running_and_ready(&pods[0]) && name(&pods[0]) != old
        })
        .await;
        name(&self.pods().await[0])
    }

    fn sets(&self) -> Api<ClientCertificateSet> {
        self.ns.api()
    }

    async fn set(&self) -> ClientCertificateSet {
        self.sets().get("production").await.unwrap()
    }

    async fn wait_set(
        &self,
        what: &str,
        cond: impl Fn(Option<&ClientCertificateSet>) -> bool + Send + 'static,
    ) -> ClientCertificateSet {
        wait_until(
            &self.sets(),
            "production",
            T,
            what,
            move |s: Option<&ClientCertificateSet>| cond(s),
        )
        .await
    }

    /// The rendered env as the app container has it.
    async fn pods(&self) -> Vec<Pod> {
        app_pods(&self.ns, &self.app).await
    }

    /// Every app pod runs the current wiring (the set's applied hash on its
    /// template) and is Ready, none is going away, and the workload has
    /// all its replicas.
    async fn wait_all_wired(&self) {
        let want = self.set().await.status.unwrap().applied_hash.unwrap();
        let replicas = self.replicas().await;
        wait_for(T, "every app pod running the set's rendering", || {
            let want = want.clone();
            async move {
                let pods = self.pods().await;
                pods.len() == replicas as usize
                    && pods.iter().all(|p| {
                        running_and_ready(p)
                            && p.metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get("certpin.dev/config-hash"))
                                == Some(&want)
                    })
            }
        })
        .await;
    }

    async fn replicas(&self) -> i32 {
        if let Some(d) = self
            .ns
            .api::<Deployment>()
            .get_opt(&self.app)
            .await
            .unwrap()
        {
            d.spec.unwrap().replicas.unwrap_or(1)
        } else {
            let s = self.ns.api::<StatefulSet>().get(&self.app).await.unwrap();
            // during a StopStart the spec says 0: the set records the count
            s.spec.unwrap().replicas.unwrap_or(1).max(1)
        }
    }

    async fn log(&self, pod: &str) -> String {
        pod_log(&self.ns, pod, "app").await
    }

    async fn partners_log(&self, pod: &str) -> String {
        pod_log(&self.ns, pod, "partners").await
    }

    /// The app's next full round of calls in `pod` after what it logged so far.
    async fn next_round(&self, pod: &str) -> std::collections::BTreeMap<String, Call> {
        let now = calls(&self.log(pod).await)
            .last()
            .map(|c| c.round)
            .unwrap_or(0);
        next_calls(&self.ns, pod, now, T).await
    }

    async fn replica_set_names(&self) -> BTreeSet<String> {
        self.ns
            .api::<ReplicaSet>()
            .list(&ListParams::default().labels(&format!("app={}", self.app)))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.metadata.name.unwrap())
            .collect()
    }

    /// The path of certificate `name` in the pod, as status says.
    async fn path_of(&self, name: &str) -> String {
        self.set()
            .await
            .status
            .unwrap()
            .certificates
            .into_iter()
            .find(|c| c.name == name)
            .and_then(|c| c.path)
            .unwrap()
    }
}

/// The calls of one round, as the mission wants them for a pod whose
/// partner-a certificate is `a` (its subject).
fn assert_mission_round(pod: &str, round: &std::collections::BTreeMap<String, Call>, a: &str) {
    let get = |e: &str| {
        round
            .get(e)
            .unwrap_or_else(|| panic!("{pod}: no call to {e}: {round:?}"))
    };
    let pa = get("partner-a.test");
    assert_eq!(
        (pa.presented.as_str(), pa.ok, pa.said.as_str()),
        (a, true, format!("subject={a}").as_str()),
        "{pod}: partner-a.test"
    );
    let pb = get("partner-b.test");
    assert_eq!(
        (pb.presented.as_str(), pb.ok, pb.said.as_str()),
        (SUBJECT_B, true, format!("subject={SUBJECT_B}").as_str()),
        "{pod}: partner-b.test"
    );
    // noCertificateFor: the runtime presents nothing though partner-c asks
    let pc = get("partner-c.test");
    assert_eq!(
        (pc.presented.as_str(), pc.ok, pc.said.as_str()),
        ("none", true, "subject=none"),
        "{pod}: partner-c.test"
    );
    // untrusted.test's server certificate is from a CA the set does not
    // name: the JVM refuses it (its own cacerts are not used either)
    let u = get("untrusted.test");
    assert!(
        !u.ok && u.said.contains("PKIX path building failed"),
        "{pod}: untrusted.test must fail on trust: {u:?}"
    );
}

/// What a partner saw in `pod` since it started (all of it, in order).
async fn seen(m: &Mission, pod: &str, partner: &str) -> Vec<String> {
    seen_by(&m.partners_log(pod).await, partner)
}

#[tokio::test]
async fn the_mission_each_partner_sees_the_certificate_pinned_to_it() {
    let Some(node) = real_node() else { return };
    let m = Mission::start(
        node,
        "rn-mission",
        Kind::Deployment {
            replicas: 1,
            min_ready: 0,
        },
        "Rolling",
    )
    .await;
    let pod = name(&m.pods().await[0]);
    let round = m.next_round(&pod).await;
    assert_mission_round(&pod, &round, SUBJECT_A);

    // Each partner logged exactly the subject pinned to it, every time.
    let a = seen(&m, &pod, "partner-a").await;
    let b = seen(&m, &pod, "partner-b").await;
    let c = seen(&m, &pod, "partner-c").await;
    assert!(!a.is_empty() && a.iter().all(|s| s == SUBJECT_A), "{a:?}");
    assert!(!b.is_empty() && b.iter().all(|s| s == SUBJECT_B), "{b:?}");
    assert!(!c.is_empty() && c.iter().all(|s| s == "none"), "{c:?}");
    assert!(seen(&m, &pod, "untrusted").await.is_empty());

    // What the kubelet gave the app: the settings from the rendered
    // ConfigMap and Secret, trust only from the set's caCertificates.
    let status = m.set().await.status.unwrap();
    let ca_paths: Vec<String> = status
        .ca_certificates
        .iter()
        .map(|c| c.path.clone().unwrap())
        .collect();
    assert_eq!(ca_paths.len(), 1);
    let env = exec(&m.ns.name, &pod, &["env"]);
    let setting = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("MXRUNTIME_{k}=")))
            .unwrap_or_else(|| panic!("no MXRUNTIME_{k} in the app's environment"))
            .to_string()
    };
    assert_eq!(setting("CACertificates"), ca_paths.join(","));
    let (pa, pb) = (m.path_of("partner-a").await, m.path_of("partner-b").await);
    assert_eq!(setting("ClientCertificates"), format!("{pa},{pb}"));
    let usages: Value = serde_json::from_str(&setting("ClientCertificateUsages")).unwrap();
    assert_eq!(
        usages,
        json!({"partner-a.test": pa, "partner-b.test": pb, "untrusted.test": pb, "partner-c.test": ""})
    );
    // the partners' container was not wired (spec.app.containers: [app])
    let partners_env = kubectl(&[
        "exec", "-n", &m.ns.name, &pod, "-c", "partners", "--", "env",
    ]);
    assert!(!partners_env.contains("MXRUNTIME_"), "{partners_env}");
    let _ = &m.certpin;
}

#[tokio::test]
async fn a_rotation_is_one_rolling_restart_and_pods_not_yet_replaced_keep_working() {
    let Some(node) = real_node() else { return };
    // minReadySeconds keeps each old pod running well past the kubelet's
    // refresh of its Secret volume (syncFrequency 10 s on the real node).
    let m = Mission::start(
        node,
        "rn-rotate",
        Kind::Deployment {
            replicas: 2,
            min_ready: 30,
        },
        "Rolling",
    )
    .await;
    let old_pods: Vec<String> = m.pods().await.iter().map(name).collect();
    let before = m.replica_set_names().await;
    let old_hash = m.set().await.status.unwrap().applied_hash.unwrap();
    let old_file = m.path_of("partner-a").await;

    put_client_a(&m.ns, "client-a-v2.p12", None).await;
    let set = m.wait_applied(&old_hash).await;
    let new_file = set
        .status
        .unwrap()
        .certificates
        .into_iter()
        .find(|c| c.name == "partner-a")
        .and_then(|c| c.path)
        .unwrap();
    assert_ne!(new_file, old_file);

    // An old pod, still running: once its volume holds the new rendering
    // (the kubelet refreshed it), its own files are still there and its
    // next calls still present the old certificate.
    let file = |p: &str| p.rsplit('/').next().unwrap().to_string();
    let (new_name, old_name) = (file(&new_file), file(&old_file));
    let mut refreshed = None;
    wait_for(T, "an old pod's volume to hold the new file", || {
        let found = old_pods.iter().find_map(|p| {
            let l = try_exec(&m.ns.name, p, &["ls", MOUNT]).ok()?;
            l.lines().any(|f| f == new_name).then(|| (p.clone(), l))
        });
        let hit = found.is_some();
        if hit {
            refreshed = found;
        }
        async move { hit }
    })
    .await;
    let (old, listing) = refreshed.unwrap();
    assert!(
        listing.lines().any(|f| f == old_name),
        "{old}: its file {old_name} went away: {listing}"
    );
    let round = m.next_round(&old).await;
    assert_mission_round(&old, &round, SUBJECT_A);

    // One rolling restart: one new ReplicaSet, every pod replaced, each
    // presenting the new certificate.
    wait_until(
        &m.ns.api::<Deployment>(),
        &m.app,
        T,
        "rollout",
        rollout_complete(),
    )
    .await;
    m.wait_all_wired().await;
    let after = m.replica_set_names().await;
    assert_eq!(
        after.difference(&before).count(),
        1,
        "one new ReplicaSet: before {before:?}, after {after:?}"
    );
    for p in m.pods().await {
        let p = name(&p);
        assert!(!old_pods.contains(&p));
        let round = m.next_round(&p).await;
        assert_mission_round(&p, &round, SUBJECT_A2);
        let a = seen(&m, &p, "partner-a").await;
        assert!(a.iter().all(|s| s == SUBJECT_A2), "{p}: {a:?}");
    }
}

#[tokio::test]
async fn stop_start_really_stops_and_starts_a_statefulsets_pods() {
    let Some(node) = real_node() else { return };
    let m = Mission::start(
        node,
        "rn-stopstart",
        Kind::StatefulSet { replicas: 2 },
        "StopStart",
    )
    .await;
    let old: BTreeSet<String> = m.pods().await.iter().map(uid).collect();
    for p in m.pods().await {
        let round = m.next_round(&name(&p)).await;
        assert_mission_round(&name(&p), &round, SUBJECT_A);
    }

    // Watch the pod count while the rotation runs: StopStart means none.
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    // A watch, not polling: the API server's events for these pods in
    // order, so a moment with none at all is seen however short it was.
    let watcher = {
        let (fewest, api) = (fewest.clone(), m.ns.api::<Pod>());
        let labels = format!("app={}", m.app);
        tokio::spawn(async move {
            use futures::StreamExt;
            use kube::runtime::watcher;
            let (mut live, mut listed) = (BTreeSet::new(), false);
            let mut stream = watcher(api, watcher::Config::default().labels(&labels)).boxed();
            while let Some(Ok(e)) = stream.next().await {
                match e {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                        live.insert(uid(&p));
                    }
                    watcher::Event::Delete(p) => {
                        live.remove(&uid(&p));
                    }
                    watcher::Event::Init => live.clear(),
                    watcher::Event::InitDone => listed = true,
                }
                if listed {
                    fewest.fetch_min(live.len(), Ordering::SeqCst);
                }
            }
        })
    };
    let old_hash = m.set().await.status.unwrap().applied_hash.unwrap();
    put_client_a(&m.ns, "client-a-v2.p12", None).await;
    m.wait_set("the rotation applied", move |s| {
        ready(s)
            && s.and_then(|s| s.status.as_ref())
                .and_then(|st| st.applied_hash.as_ref())
                .is_some_and(|h| *h != old_hash)
    })
    .await;
    wait_until(
        &m.ns.api::<StatefulSet>(),
        &m.app,
        T,
        "started again with 2 ready replicas",
        |s: Option<&StatefulSet>| {
            s.is_some_and(|s| {
                s.spec.as_ref().and_then(|sp| sp.replicas) == Some(2)
                    && s.status.as_ref().and_then(|st| st.ready_replicas) == Some(2)
            })
        },
    )
    .await;
    m.wait_all_wired().await;
    watcher.abort();
    assert_eq!(
        fewest.load(Ordering::SeqCst),
        0,
        "StopStart: every pod stopped before any started"
    );
    let now = m.pods().await;
    assert!(
        now.iter().all(|p| !old.contains(&uid(p))),
        "all pods are new"
    );
    for p in now {
        let round = m.next_round(&name(&p)).await;
        assert_mission_round(&name(&p), &round, SUBJECT_A2);
    }
}

#[tokio::test]
async fn a_wrong_password_leaves_the_app_presenting_the_old_certificate() {
    let Some(node) = real_node() else { return };
    let m = Mission::start(
        node,
        "rn-badpw",
        Kind::Deployment {
            replicas: 1,
            min_ready: 0,
        },
        "Rolling",
    )
    .await;
    let pod = m.pods().await[0].clone();
    let before = m.replica_set_names().await;

    put_client_a(&m.ns, "client-a-v2.p12", Some("not-its-password")).await;
    let set = m
        .wait_set("Stalled: WrongPassword", |s| {
            s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.status == "True")
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "False")
            })
        })
        .await;
    let conditions = set.status.unwrap().conditions;
    assert!(
        conditions.iter().any(|c| c.reason == "WrongPassword"),
        "{conditions:?}"
    );
    // The running app: the same pod, calling on with the old certificate,
    // which partner-a still sees.
    let round = m.next_round(&name(&pod)).await;
    assert_mission_round(&name(&pod), &round, SUBJECT_A);
    let now = m.pods().await;
    assert_eq!(now.iter().map(uid).collect::<Vec<_>>(), vec![uid(&pod)]);
    assert_eq!(m.replica_set_names().await, before);
    let a = seen(&m, &name(&pod), "partner-a").await;
    assert!(a.iter().all(|s| s == SUBJECT_A), "{a:?}");
}

#[tokio::test]
async fn an_app_container_restarted_during_a_rotation_pairs_files_and_passwords() {
    let Some(node) = real_node() else { return };
    let m = Mission::start(
        node,
        "rn-crash-app",
        Kind::Deployment {
            replicas: 1,
            min_ready: 30,
        },
        "Rolling",
    )
    .await;
    let old = m.pods().await[0].clone();
    let old_hash = m.set().await.status.unwrap().applied_hash.unwrap();
    put_client_a(&m.ns, "client-a-v2.p12", None).await;
    m.wait_applied(&old_hash).await;
    // The old pod's app container dies right after the rendered objects
    // changed (its volume may not have been refreshed yet) and the kubelet
    // starts it again: its environment now comes from the new rendering.
    let (id, restarts) = container(&old, "app");
    m.node.kill_container(&id.unwrap());
    let pods: Api<Pod> = m.ns.api();
    wait_until(
        &pods,
        &name(&old),
        T,
        "the app container restarted",
        move |p: Option<&Pod>| {
            p.is_some_and(|p| container(p, "app").1 > restarts && running_and_ready(p))
        },
    )
    .await;
    // Its first calls succeed: whichever rendering's settings it read, the
    // files they name are there and their password opens them.
    let round = next_calls(&m.ns, &name(&old), 0, T).await;
    let pa = &round["partner-a.test"];
    eprintln!("the restarted container's first call to partner-a: {pa:?}");
    assert!(pa.ok, "the restarted container's call to partner-a: {pa:?}");
    assert!(
        pa.presented == SUBJECT_A || pa.presented == SUBJECT_A2,
        "{pa:?}"
    );
    assert_eq!(pa.said, format!("subject={}", pa.presented));
    let first = calls(&m.log(&name(&old)).await);
    assert!(
        first
            .iter()
            .filter(|c| c.endpoint != "untrusted.test")
            .all(|c| c.ok),
        "every call of the restarted container succeeds: {first:?}"
    );
}

#[tokio::test]
async fn certpin_killed_during_a_rotation_never_pairs_a_new_password_with_an_old_file() {
    let Some(node) = real_node() else { return };
    let m = Mission::start(
        node,
        "rn-crash-op",
        Kind::Deployment {
            replicas: 1,
            min_ready: 0,
        },
        "Rolling",
    )
    .await;
    let before = m.replica_set_names().await;
    let op = m.certpin.pods().await[0].clone();
    let (id, restarts) = container(&op, "certpin");
    put_client_a(&m.ns, "client-a-v2.p12", None).await;
    // certpin dies mid-change (as soon as the rendered Secret moved, before
    // or while it writes the rest) and the kubelet starts it again.
    wait_for(T, "the rendered Secret to change", || {
        let ns = &m.ns;
        async move {
            ns.api::<k8s_openapi::api::core::v1::Secret>()
                .get("production-certpin")
                .await
                .ok()
                .and_then(|s| s.data)
                .is_some_and(|d| d.len() > 3)
        }
    })
    .await;
    m.node.kill_container(&id.unwrap());
    let pods: Api<Pod> = m.certpin.ns.api();
    wait_until(
        &pods,
        &name(&op),
        T,
        "certpin restarted by the kubelet",
        move |p: Option<&Pod>| {
            p.is_some_and(|p| container(p, "certpin").1 > restarts && running_and_ready(p))
        },
    )
    .await;
    m.wait_set("Ready with the new certificate", |s| {
        ready(s)
            && s.and_then(|s| s.status.as_ref()).is_some_and(|st| {
                st.certificates.iter().any(|c| {
                    c.name == "partner-a"
                        && c.subject
                            .as_deref()
                            .is_some_and(|s| s.contains("(rotated)"))
                })
            })
    })
    .await;
    wait_until(
        &m.ns.api::<Deployment>(),
        &m.app,
        T,
        "rollout",
        rollout_complete(),
    )
    .await;
    m.wait_all_wired().await;
    let after = m.replica_set_names().await;
    assert_eq!(
        after.difference(&before).count(),
        1,
        "{before:?} -> {after:?}"
    );
    for p in m.pods().await {
        let round = m.next_round(&name(&p)).await;
        assert_mission_round(&name(&p), &round, SUBJECT_A2);
        let all = calls(&m.log(&name(&p)).await);
        assert!(
            all.iter()
                .filter(|c| c.endpoint != "untrusted.test")
                .all(|c| c.ok),
            "{all:?}"
        );
    }
}

/// The chart as a user installs it: two replicas on the real node, as user
/// 65532 on a read-only root with the chart's limits; probes pass, one of
/// them holds the Lease, a set becomes Ready. Killing the leader's
/// container (the kubelet restarts it) restarts no app.
#[tokio::test]
async fn the_chart_as_a_user_installs_it() {
    let Some(node) = real_node() else { return };
    let app = TestNamespace::new("rn-chart").await;
    install_crd(&app.client).await;
    put_mission_material(&app).await;
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "shop"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "shop"}},
                 "template": app_template("shop", 2)}
    }))
    .unwrap();
    app.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();

    let sys = TestNamespace::new("rn-chart-sys").await;
    let release = format!("certpin-{}", &app.name[app.name.len() - 8..]);
    let (mut values, strings) = on_the_real_node(&app.name);
    values.push("logging.level=info\\,certpin=debug".into());
    helm_install(&release, &sys.name, &values, &strings);
    let installed = Installed {
        release: release.clone(),
        ns: sys,
    };
    let sys = &installed.ns;

    // helm --wait: both replicas Ready, so both probes pass.
    let pods = installed.pods().await;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert!(running_and_ready(p), "{p:?}");
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some(node.node.as_str())
        );
        let (id, _) = container(p, "certpin");
        let pid = node.pid_of(&id.unwrap());
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        for field in ["Uid:", "Gid:"] {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            assert!(
                line.split_whitespace().skip(1).all(|v| v == "65532"),
                "{line}"
            );
        }
        assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
        assert!(
            status.lines().any(|l| l == "CapEff:\t0000000000000000"),
            "{status}"
        );
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let root = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .unwrap();
        assert!(
            root.split_whitespace()
                .nth(5)
                .is_some_and(|o| o.split(',').any(|f| f == "ro")),
            "{root}"
        );
        // the chart's limits (500m, 256Mi), as the kernel enforces them
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let path = |ctrl: &str| {
            cgroup
                .lines()
                .find_map(|l| {
                    let mut f = l.splitn(3, ':');
                    let (_, c, p) = (f.next()?, f.next()?, f.next()?);
                    c.split(',').any(|x| x == ctrl).then(|| p.to_string())
                })
                .unwrap()
        };
        let read = |f: String| std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(
            read(format!(
                "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
                path("memory")
            ))
            .trim(),
            (256 * 1024 * 1024).to_string()
        );
        assert_eq!(
            read(format!(
                "/sys/fs/cgroup/cpu{}/cpu.cfs_quota_us",
                path("cpu")
            ))
            .trim(),
            "50000"
        );
    }

    // The Lease: held by one of the two.
    let names: Vec<String> = pods.iter().map(name).collect();
    let leases: Api<Lease> = sys.api();
    wait_until(&leases, &release, T, "the Lease held", {
        let names = names.clone();
        move |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_ref())
                .is_some_and(|h| names.contains(h))
        }
    })
    .await;

    // A set becomes Ready and the app, restarted once with it, calls out.
    let sets: Api<ClientCertificateSet> = app.api();
    let set: ClientCertificateSet =
        serde_json::from_value(mission_set("production", ("deployment", "shop"), "Rolling"))
            .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    wait_until(&sets, "production", T, "Ready", ready).await;
    wait_until(
        &app.api::<Deployment>(),
        "shop",
        T,
        "rollout",
        rollout_complete(),
    )
    .await;
    let app_pods_before = app_pods(&app, "shop").await;
    wait_for(T, "the wired app pod alone", || {
        let app = &app;
        async move {
            let pods = app_pods(app, "shop").await;
            pods.len() == 1 && pods.iter().all(running_and_ready)
        }
    })
    .await;
    let app_pod = name(&app_pods(&app, "shop").await[0]);
    let round = next_calls(&app, &app_pod, 0, T).await;
    assert_mission_round(&app_pod, &round, SUBJECT_A);
    drop(app_pods_before);
    let rs_before: BTreeSet<String> = app
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels("app=shop"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.metadata.name.unwrap())
        .collect();
    let uids_before: Vec<String> = app_pods(&app, "shop").await.iter().map(uid).collect();
    let generation = app
        .api::<Deployment>()
        .get("shop")
        .await
        .unwrap()
        .metadata
        .generation;

    // Kill the leader's container; the kubelet restarts it; a leader (that
    // one or the other) reconciles the set again.
    let holder = leases
        .get(&release)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    let leader = pods.iter().find(|p| name(p) == holder).unwrap();
    let (id, restarts) = container(leader, "certpin");
    let killed_at = k8s_openapi::jiff::Timestamp::now();
    node.kill_container(&id.unwrap());
    let pod_api: Api<Pod> = sys.api();
    wait_until(
        &pod_api,
        &holder,
        T,
        "certpin restarted by the kubelet",
        move |p: Option<&Pod>| {
            p.is_some_and(|p| container(p, "certpin").1 > restarts && running_and_ready(p))
        },
    )
    .await;
    // The leader now (the restarted container, or the other replica once
    // the Lease expired) has reconciled the set since the kill.
    wait_for(T, "a leader to reconcile the set after the kill", || {
        let installed = &installed;
        async move {
            installed.logs().await.lines().any(|l| {
                l.contains(" reconciled ")
                    && l.contains("set=production")
                    && l.split_whitespace()
                        .next()
                        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                        .is_some_and(|t| t > killed_at)
            })
        }
    })
    .await;
    wait_until(&sets, "production", T, "Ready", ready).await;
    // No app restarted: same ReplicaSets, same pods, same generation.
    let rs_after: BTreeSet<String> = app
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels("app=shop"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.metadata.name.unwrap())
        .collect();
    assert_eq!(rs_after, rs_before);
    assert_eq!(
        app_pods(&app, "shop")
            .await
            .iter()
            .map(uid)
            .collect::<Vec<_>>(),
        uids_before
    );
    assert_eq!(
        app.api::<Deployment>()
            .get("shop")
            .await
            .unwrap()
            .metadata
            .generation,
        generation
    );
}

/// The Deployment's generation (a template change or a scale bumps it)
/// and its rollout revision.
async fn generation_and_revision(m: &Mission) -> (i64, String) {
    let d = m.ns.api::<Deployment>().get(&m.app).await.unwrap();
    let revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned())
        .unwrap_or_default();
    (d.metadata.generation.unwrap(), revision)
}

/// certpin's one pod: its name and how often its container restarted
/// (which would reset its counters).
async fn certpin_pod(m: &Mission) -> (String, i32) {
    let pods = m.certpin.pods().await;
    assert_eq!(pods.len(), 1, "certpin runs one replica here");
    (name(&pods[0]), container(&pods[0], "certpin").1)
}

/// The value of every series of `metric` in certpin's /metrics (through
/// the API server's proxy to its pod), summed.
async fn metric_sum(m: &Mission, metric: &str) -> f64 {
    let (pod, _) = certpin_pod(m).await;
    let path = format!(
        "/api/v1/namespaces/{}/pods/{pod}:8080/proxy/metrics",
        m.certpin.ns.name
    );
    // The API server's dial to a pod can time out once in a while on this
    // node; a scrape is retried as Prometheus would.
    let mut text = String::new();
    wait_for(T, "certpin's /metrics through the API server", || {
        let out = std::process::Command::new("kubectl")
            .args(["get", "--raw", &path])
            .output()
            .expect("kubectl");
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        std::future::ready(out.status.success())
    })
    .await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `spec.restart` set to `to`, and certpin's pass over it reported.
async fn switch_restart(m: &Mission, to: &str) {
    let patch = json!({"spec": {"restart": to}});
    let set = m
        .sets()
        .patch(
            "production",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let generation = set.metadata.generation;
    m.wait_set(&format!("the switch to {to} handled"), move |s| {
        ready(s)
            && s.and_then(|s| s.status.as_ref())
                .is_some_and(|st| st.observed_generation == generation)
    })
    .await;
}

#[tokio::test]
async fn after_a_users_restart_no_strategy_switch_restarts_or_scales_the_app() {
    let Some(node) = real_node() else { return };
    let m = Mission::start(
        node,
        "rn-switch",
        Kind::Deployment {
            replicas: 1,
            min_ready: 0,
        },
        "Manual",
    )
    .await;
    let certpin = certpin_pod(&m).await;
    let failures = metric_sum(&m, "certpin_reconcile_failures_total").await;
    let passes = metric_sum(&m, "certpin_reconciliations_total").await;
    let restarts = metric_sum(&m, "certpin_restarts_total").await;

    // Manual: the rotation waits for the user; nothing of the app moves.
    let (generation, revision) = generation_and_revision(&m).await;
    let first = name(&m.pods().await[0]);
    put_client_a(&m.ns, "client-a-v2.p12", None).await;
    m.wait_set("RestartDue", |s| {
        s.and_then(|s| s.status.as_ref())
            .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.reason == "RestartDue")
    })
    .await;
    assert_eq!(generation_and_revision(&m).await, (generation, revision));

    // The user's own restart applies the rotation: its new pod presents
    // the new certificate, and the set is Ready again.
    kubectl(&[
        "rollout",
        "restart",
        "-n",
        &m.ns.name,
        &format!("deployment/{}", m.app),
    ]);
    wait_until(
        &m.ns.api::<Deployment>(),
        &m.app,
        T,
        "the user's rollout",
        rollout_complete(),
    )
    .await;
    m.wait_set("Ready after the user's restart", ready).await;
    let pod = m.one_pod_other_than(&first).await;
    assert_mission_round(&pod, &m.next_round(&pod).await, SUBJECT_A2);
    // Waiting for the user was many passes and no failure (of one
    // process: a restarted certpin would have reset its counters).
    assert_eq!(certpin_pod(&m).await, certpin, "certpin restarted");
    assert!(metric_sum(&m, "certpin_reconciliations_total").await > passes);
    assert_eq!(
        metric_sum(&m, "certpin_reconcile_failures_total").await,
        failures,
        "waiting for a Manual restart counted as a failure"
    );

    // Each switch: no new revision, no scale (either bumps the
    // generation), the same pod, no restart by certpin.
    let settled = generation_and_revision(&m).await;
    for to in ["Rolling", "StopStart", "Rolling", "Manual", "StopStart"] {
        switch_restart(&m, to).await;
        assert_eq!(generation_and_revision(&m).await, settled, "-> {to}");
        let now: Vec<String> = m.pods().await.iter().map(name).collect();
        assert_eq!(now, std::slice::from_ref(&pod), "-> {to}");
    }
    assert_eq!(metric_sum(&m, "certpin_restarts_total").await, restarts);
    assert_eq!(certpin_pod(&m).await, certpin, "certpin restarted");
}
