//! Connecting to the local control plane (scripts/testbed), a namespace per
//! test, and waiting on conditions with timeouts.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// A client for the test bed. KUBECONFIG must point at it (`eval "$(scripts/testbed env)"`,
/// which scripts/test does).
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run the tests with scripts/test, or `eval \"$(scripts/testbed env)\"` after `scripts/testbed up`"
    );
    let client = Client::try_default()
        .await
        .expect("kubeconfig from KUBECONFIG");
    client
        .apiserver_version()
        .await
        .expect("the test bed's API server does not answer: run `scripts/testbed up`");
    client
}

/// A namespace of its own for one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> TestNamespace {
        let client = client().await;
        let name = format!("{prefix}-{:08x}", rand_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"certpin.dev/test": "true"}}
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        // Pods need the namespace's default ServiceAccount, created asynchronously.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_for(Duration::from_secs(60), "default ServiceAccount", || {
            let sa = sa.clone();
            async move { sa.get_opt("default").await.ok().flatten().is_some() }
        })
        .await;
        TestNamespace { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("CERTPIN_KEEP_NAMESPACES").is_some() {
            return;
        }
        let name = self.name.clone();
        // Drop cannot await; delete from a helper thread with its own runtime
        // and its own client (the test's client lives on the blocked runtime).
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(client) = Client::try_default().await {
                        let _ = Api::<Namespace>::all(client)
                            .delete(&name, &DeleteParams::background())
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

/// The operator is gone by the time a test's namespace is deleted, so the
/// sets' finalizers would keep the namespace Terminating: drop them.
async fn release_finalizers(client: &Client, ns: &str) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "certpin.dev",
        "v1alpha1",
        "ClientCertificateSet",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let Ok(list) = api.list(&Default::default()).await else {
        return;
    };
    for obj in list.items {
        if let Some(name) = obj.metadata.name {
            let patch = serde_json::json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Waits until `cond` holds for the named object, or panics after `timeout`.
pub async fn wait_until<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: impl Condition<K>,
) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let cond = |o: Option<&K>| cond.matches_object(o);
    loop {
        let watched = await_condition(api.clone(), name, cond);
        match tokio::time::timeout_at(deadline, watched).await {
            Ok(Ok(Some(obj))) => return obj,
            Ok(Ok(None)) => panic!("{name}: deleted while waiting for {what}"),
            // The watch fell behind the API server's window (410 Expired,
            // when other suites share the API server): start over from a
            // fresh list, which sees the current object.
            Ok(Err(e)) => {
                eprintln!("{name}: the watch for {what} failed ({e}); watching again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => panic!(
                "{name}: timed out after {timeout:?} waiting for {what}: last seen {:?}",
                api.get_opt(name).await.ok().flatten()
            ),
        }
    }
}

/// Polls `check` (every 200 ms) until it returns true, or panics after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Deployment whose rollout has finished: the controller has seen the
/// latest spec, every replica is updated and available, no old one is left.
pub fn rollout_complete() -> impl Condition<k8s_openapi::api::apps::v1::Deployment> {
    |d: Option<&k8s_openapi::api::apps::v1::Deployment>| {
        let Some(d) = d else { return false };
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let Some(st) = d.status.as_ref() else {
            return false;
        };
        st.observed_generation >= d.metadata.generation
            && st.updated_replicas.unwrap_or(0) == want
            && st.available_replicas.unwrap_or(0) == want
            && st.replicas.unwrap_or(0) == want
    }
}

/// `reason: note` of every Event in the namespace.
#[allow(dead_code)]
pub async fn events_in(ns: &TestNamespace) -> Vec<String> {
    events(ns, None).await
}

/// `reason: note` of the Events regarding the object `name`.
#[allow(dead_code)]
pub async fn events_about(ns: &TestNamespace, name: &str) -> Vec<String> {
    events(ns, Some(name)).await
}

async fn events(ns: &TestNamespace, regarding: Option<&str>) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            regarding
                .is_none_or(|n| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(n))
        })
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect()
}

/// As `wait_until`, but by reading the object every 200 ms instead of
/// watching it: a watch fails when the test bed compacts etcd under it
/// ("too old resource version", while other tests restart or compact).
pub async fn poll_until<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(Option<&K>) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let obj = api.get_opt(name).await.ok().flatten();
        if cond(obj.as_ref())
            && let Some(obj) = obj
        {
            return obj;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: timed out after {timeout:?} waiting for {what}: last seen {obj:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kubectl (from the test bed's PATH) with `args` and `stdin` as its input;
/// its output, whatever the exit.
pub fn kubectl_with_input(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl (eval \"$(scripts/testbed env)\")");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
