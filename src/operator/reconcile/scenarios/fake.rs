//! A small API server in memory for the reconcile scenarios: a store of
//! objects by path that answers what certpin sends (GET and LIST, also
//! metadata-only; server-side apply, merge and JSON patches; the scale
//! subresource; Event creation), with failures a test injects, changes a
//! test makes "behind certpin's back" after a given request, and a log of
//! every request.
//!
//! Server-side apply is approximated per field manager: an object is a base
//! (what the test created, changed by merge and JSON patches) and the latest
//! body each manager applied; the live object is the base with each applied
//! body merged over it, in the order they were last applied, lists of
//! objects with a `name` merged by name. Applying again without a field
//! removes it, as the API server does for a field no other manager owns.
//! A merge patch takes the fields it names away from the appliers.
//!
//! Secret data is never printed: the log keeps request bodies only to be
//! searched, and nothing here implements `Debug` over objects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Method, Request, Response};
use kube::client::Body;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

/// Which part of an object a manager applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sub {
    Main,
    Status,
}

#[derive(Clone)]
struct Object {
    base: Value,
    /// (manager, part) and the latest body it applied, oldest first.
    applied: Vec<((String, Sub), Value)>,
}

impl Object {
    fn live(&self) -> Value {
        let mut v = self.base.clone();
        for (_, body) in &self.applied {
            merge(&mut v, body);
        }
        v
    }
}

/// An answer that is not a success: HTTP code and a `Status` body.
struct Refused(u16, Value);

type Answer = Result<(u16, Value), Refused>;

fn status_body(code: u16, message: &str) -> Value {
    let reason = match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        413 => "RequestEntityTooLarge",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    };
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn refuse(code: u16, message: impl AsRef<str>) -> Refused {
    Refused(code, status_body(code, message.as_ref()))
}

/// The objects, by path (`<collection>/<name>`).
pub struct Store {
    revision: u64,
    uids: u64,
    objects: BTreeMap<String, Object>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            revision: 100,
            uids: 0,
            objects: BTreeMap::new(),
        }
    }
}

/// `<collection>/<name>` of a typed object.
fn key_of<K: Resource<DynamicType = ()>>(ns: &str, name: &str) -> String {
    format!("{}/{name}", K::url_path(&(), Some(ns)))
}

/// How an object is named in the API server's messages: `deployments.apps "app"`.
fn resource_of<K: Resource<DynamicType = ()>>(name: &str) -> String {
    described(&K::plural(&()), &K::group(&()), name)
}

fn described(plural: &str, group: &str, name: &str) -> String {
    if group.is_empty() {
        format!("{plural} {name:?}")
    } else {
        format!("{plural}.{group} {name:?}")
    }
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")?.get(field)?.as_str()
}

/// What a client may not set, and what a part's apply leaves alone.
fn clean(mut body: Value, sub: Sub) -> Value {
    if let Some(Value::Object(m)) = body.get_mut("metadata") {
        for f in [
            "resourceVersion",
            "uid",
            "generation",
            "creationTimestamp",
            "managedFields",
            "deletionTimestamp",
        ] {
            m.remove(f);
        }
    }
    match sub {
        Sub::Main => {
            if let Value::Object(o) = &mut body {
                o.remove("status");
            }
            body
        }
        Sub::Status => json!({"status": body.get("status").cloned().unwrap_or(Value::Null)}),
    }
}

/// Everything but the metadata and the status: what makes a new generation.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(o) = &mut v {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

/// `from` merged over `into`; lists whose items are objects with a `name`
/// merge by name, other lists and scalars are replaced.
pub(in crate::operator::reconcile) fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(i), Value::Object(f)) => {
            for (k, fv) in f {
                match i.get_mut(k) {
                    Some(iv) => merge(iv, fv),
                    None => {
                        i.insert(k.clone(), fv.clone());
                    }
                }
            }
        }
        (Value::Array(i), Value::Array(f)) if f.iter().all(|x| x.get("name").is_some()) => {
            for fv in f {
                match i.iter_mut().find(|iv| iv.get("name") == fv.get("name")) {
                    Some(iv) => merge(iv, fv),
                    None => i.push(fv.clone()),
                }
            }
        }
        (into, from) => *into = from.clone(),
    }
}

/// Removes from `body` every leaf `patch` names: an update takes those
/// fields from whoever applied them.
fn take_fields(body: &mut Value, patch: &Value) {
    let (Value::Object(b), Value::Object(p)) = (body, patch) else {
        return;
    };
    for (k, pv) in p {
        match (b.get_mut(k), pv) {
            (Some(bv @ Value::Object(_)), Value::Object(_)) => take_fields(bv, pv),
            (Some(_), _) => {
                b.remove(k);
            }
            (None, _) => {}
        }
    }
}

impl Store {
    fn now() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// Creates (or replaces the base of) an object at `key`.
    fn put_value(&mut self, key: &str, body: Value) -> Value {
        let body_clean = clean(body, Sub::Main);
        let before = self.objects.get(key).cloned();
        match self.objects.get_mut(key) {
            Some(o) => {
                let mut base = body_clean;
                for f in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                    if let Some(v) = o.base["metadata"].get(f).cloned() {
                        base["metadata"][f] = v;
                    }
                }
                o.base = base;
            }
            None => {
                self.uids += 1;
                let mut base = body_clean;
                base["metadata"]["uid"] = json!(format!("uid-{}", self.uids));
                base["metadata"]["creationTimestamp"] = json!(Self::now());
                base["metadata"]["generation"] = json!(1);
                self.objects.insert(
                    key.to_string(),
                    Object {
                        base,
                        applied: Vec::new(),
                    },
                );
            }
        }
        self.commit(key, before.as_ref())
            .expect("the object was just stored")
    }

    /// Bumps resourceVersion (and generation, when more than metadata and
    /// status changed) if the write changed anything, removes an object
    /// whose deletion waited for finalizers that are now gone, and returns
    /// the live object.
    fn commit(&mut self, key: &str, before: Option<&Object>) -> Option<Value> {
        let obj = self.objects.get_mut(key)?;
        let live = obj.live();
        let changed = match before {
            None => true,
            Some(b) => b.live() != live || b.applied != obj.applied,
        };
        if changed {
            self.revision += 1;
            obj.base["metadata"]["resourceVersion"] = json!(self.revision.to_string());
            if let Some(b) = before
                && spec_part(&b.live()) != spec_part(&live)
            {
                let g = live["metadata"]["generation"].as_i64().unwrap_or(0);
                obj.base["metadata"]["generation"] = json!(g + 1);
            }
        }
        let live = obj.live();
        let finalizers_gone = live["metadata"]["finalizers"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if live["metadata"].get("deletionTimestamp").is_some() && finalizers_gone {
            self.objects.remove(key);
        }
        Some(live)
    }

    fn live(&self, key: &str) -> Option<Value> {
        self.objects.get(key).map(Object::live)
    }

    /// Server-side apply by `manager` (the API server's `force=true`).
    fn apply(&mut self, key: &str, what: &str, manager: &str, sub: Sub, body: Value) -> Answer {
        let precondition = meta_str(&body, "resourceVersion").map(str::to_string);
        let body = clean(body, sub);
        let slot = (manager.to_string(), sub);
        let Some(obj) = self.objects.get_mut(key) else {
            if sub == Sub::Status || precondition.is_some() {
                return Err(refuse(404, format!("{what} not found")));
            }
            let base = json!({"apiVersion": body["apiVersion"], "kind": body["kind"],
                "metadata": {"name": body["metadata"]["name"], "namespace": body["metadata"]["namespace"]}});
            let mut object = Object {
                base,
                applied: vec![(slot, body)],
            };
            if object.base["kind"] == "Deployment" {
                let live = object.live();
                if live.pointer("/spec/selector").is_none()
                    || live.pointer("/spec/template/spec/containers").is_none()
                {
                    return Err(refuse(
                        422,
                        format!(
                            "Deployment.apps {:?} is invalid: spec.selector: Required value, \
                             spec.template.spec.containers: Required value",
                            body_name(&object.base)
                        ),
                    ));
                }
            }
            self.uids += 1;
            object.base["metadata"]["uid"] = json!(format!("uid-{}", self.uids));
            object.base["metadata"]["creationTimestamp"] = json!(Self::now());
            object.base["metadata"]["generation"] = json!(1);
            self.objects.insert(key.to_string(), object);
            let live = self.commit(key, None).unwrap_or_default();
            return Ok((201, live));
        };
        if let Some(rv) = precondition
            && meta_str(&obj.base, "resourceVersion") != Some(rv.as_str())
        {
            return Err(refuse(
                409,
                format!(
                    "Operation cannot be fulfilled on {what}: the object has been modified; \
                     please apply your changes to the latest version and try again"
                ),
            ));
        }
        let before = obj.clone();
        obj.applied.retain(|(s, _)| *s != slot);
        obj.applied.push((slot, body));
        Ok((200, self.commit(key, Some(&before)).unwrap_or_default()))
    }

    /// A merge patch (RFC 7386) on the base; the fields it names are taken
    /// from the appliers.
    fn merge_patch(&mut self, key: &str, what: &str, sub: Sub, patch: &Value) -> Answer {
        let patch = match sub {
            Sub::Main => patch.clone(),
            Sub::Status => json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)}),
        };
        let obj = self
            .objects
            .get_mut(key)
            .ok_or_else(|| refuse(404, format!("{what} not found")))?;
        if let Some(rv) = meta_str(&patch, "resourceVersion")
            && meta_str(&obj.base, "resourceVersion") != Some(rv)
        {
            return Err(refuse(
                409,
                format!("Operation cannot be fulfilled on {what}: the object has been modified"),
            ));
        }
        let before = obj.clone();
        json_patch::merge(&mut obj.base, &clean(patch.clone(), Sub::Main));
        for (_, body) in &mut obj.applied {
            take_fields(body, &patch);
        }
        Ok((200, self.commit(key, Some(&before)).unwrap_or_default()))
    }

    /// A JSON patch (RFC 6902), checked against the live object, made on
    /// the base. A `test` of `null` passes on a missing path, as the API
    /// server's does.
    fn json_patch(&mut self, key: &str, what: &str, ops: &Value) -> Answer {
        let obj = self
            .objects
            .get_mut(key)
            .ok_or_else(|| refuse(404, format!("{what} not found")))?;
        let live = obj.live();
        let ops: Vec<Value> = ops
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|op| {
                let missing_null = op["op"] == "test"
                    && op["value"].is_null()
                    && op["path"]
                        .as_str()
                        .is_some_and(|p| live.pointer(p).is_none());
                !missing_null
            })
            .collect();
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
            .map_err(|e| refuse(400, format!("invalid JSON patch: {e}")))?;
        let mut checked = live;
        json_patch::patch(&mut checked, &patch)
            .map_err(|e| refuse(422, format!("{what} is invalid: the patch failed: {e}")))?;
        let before = obj.clone();
        json_patch::patch(&mut obj.base, &patch).map_err(|e| {
            refuse(
                500,
                format!("fake: the patch applies to the live object, not the base: {e}"),
            )
        })?;
        Ok((200, self.commit(key, Some(&before)).unwrap_or_default()))
    }

    fn create(&mut self, collection: &str, plural: &str, group: &str, body: Value) -> Answer {
        let Some(name) = meta_str(&body, "name").map(str::to_string) else {
            return Err(refuse(422, "metadata.name: Required value"));
        };
        let key = format!("{collection}/{name}");
        if self.objects.contains_key(&key) {
            return Err(refuse(
                409,
                format!("{} already exists", described(plural, group, &name)),
            ));
        }
        Ok((201, self.put_value(&key, body)))
    }

    fn list(&self, collection: &str, selector: &[(String, Option<String>)]) -> Vec<Value> {
        let prefix = format!("{collection}/");
        self.objects
            .iter()
            .filter(|(k, _)| k.strip_prefix(&prefix).is_some_and(|n| !n.contains('/')))
            .map(|(_, o)| o.live())
            .filter(|v| {
                selector.iter().all(|(k, want)| {
                    let have = v["metadata"]["labels"].get(k).and_then(Value::as_str);
                    match want {
                        Some(w) => have == Some(w.as_str()),
                        None => have.is_some(),
                    }
                })
            })
            .collect()
    }

    // The test's own hand on the store.

    /// Creates `obj`, or replaces what its creator wrote (what managers
    /// applied stays).
    pub fn insert<K: Resource<DynamicType = ()> + Serialize>(&mut self, obj: &K) {
        let ns = obj.meta().namespace.clone().expect("a namespaced object");
        let name = obj.meta().name.clone().expect("a named object");
        let body = serde_json::to_value(obj).expect("serializable");
        self.put_value(&key_of::<K>(&ns, &name), body);
    }

    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<K> {
        self.live(&key_of::<K>(ns, name))
            .map(|v| serde_json::from_value(v).expect("the stored object deserializes"))
    }

    /// Sets the object's status as its controller would (a write of the
    /// status subresource by another client).
    pub fn set_status<K: Resource<DynamicType = ()>>(
        &mut self,
        ns: &str,
        name: &str,
        status: Value,
    ) {
        let key = key_of::<K>(ns, name);
        let before = self.objects.get(&key).cloned();
        let Some(o) = self.objects.get_mut(&key) else {
            panic!("no {key} to set the status of");
        };
        o.base["status"] = status;
        self.commit(&key, before.as_ref());
    }

    /// Dates the object's creation (a pod started before a change).
    pub fn set_created<K: Resource<DynamicType = ()>>(&mut self, ns: &str, name: &str, at: &str) {
        let key = key_of::<K>(ns, name);
        let Some(o) = self.objects.get_mut(&key) else {
            panic!("no {key} to date");
        };
        o.base["metadata"]["creationTimestamp"] = json!(at);
    }

    /// The object's resourceVersion.
    pub fn version<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str) -> Option<String> {
        let live = self.live(&key_of::<K>(ns, name))?;
        meta_str(&live, "resourceVersion").map(str::to_string)
    }

    /// What `manager` applies, as another client would.
    pub fn apply_as<K: Resource<DynamicType = ()>>(
        &mut self,
        manager: &str,
        ns: &str,
        name: &str,
        body: Value,
    ) {
        let key = key_of::<K>(ns, name);
        if self
            .apply(&key, &resource_of::<K>(name), manager, Sub::Main, body)
            .is_err()
        {
            panic!("seeding an apply to {key} failed");
        }
    }

    /// A merge patch, as `kubectl patch --type=merge` makes it.
    pub fn merge<K: Resource<DynamicType = ()>>(&mut self, ns: &str, name: &str, patch: Value) {
        let key = key_of::<K>(ns, name);
        if self
            .merge_patch(&key, &resource_of::<K>(name), Sub::Main, &patch)
            .is_err()
        {
            panic!("a merge patch of {key} failed");
        }
    }

    /// What a DELETE does to an object with finalizers: marks it.
    pub fn mark_deleted<K: Resource<DynamicType = ()>>(&mut self, ns: &str, name: &str) {
        let key = key_of::<K>(ns, name);
        let before = self.objects.get(&key).cloned();
        let obj = self
            .objects
            .get_mut(&key)
            .unwrap_or_else(|| panic!("deleting {key}: not found"));
        obj.base["metadata"]["deletionTimestamp"] = json!(Self::now());
        self.commit(&key, before.as_ref());
    }

    pub fn remove<K: Resource<DynamicType = ()>>(&mut self, ns: &str, name: &str) {
        self.objects.remove(&key_of::<K>(ns, name));
    }

    /// The live objects of a kind in a namespace.
    pub fn all<K: Resource<DynamicType = ()> + DeserializeOwned>(&self, ns: &str) -> Vec<K> {
        self.list(&K::url_path(&(), Some(ns)), &[])
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("the stored object deserializes"))
            .collect()
    }
}

fn body_name(v: &Value) -> &str {
    meta_str(v, "name").unwrap_or_default()
}

/// Whether a request failure repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    Once,
    Always,
}

struct Failure {
    method: Method,
    path: String,
    code: u16,
    message: String,
    repeat: Repeat,
}

type Hook = Box<dyn FnOnce(&mut Store) + Send>;

/// One request certpin made. Its body is kept to be searched, never shown.
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub field_manager: Option<String>,
    /// The HTTP code of the answer.
    pub code: u16,
    body: Vec<u8>,
}

impl Logged {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }

    pub fn body_contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.body.windows(needle.len()).any(|w| w == needle)
    }
}

impl std::fmt::Debug for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}?{} ({}) manager={} -> {}",
            self.method,
            self.path,
            self.query,
            self.content_type.as_deref().unwrap_or("-"),
            self.field_manager.as_deref().unwrap_or("-"),
            self.code
        )
    }
}

#[derive(Default)]
struct Inner {
    store: Store,
    log: Vec<Logged>,
    failures: Vec<Failure>,
    hooks: Vec<(Method, String, Hook)>,
}

/// The fake API server; clones share it.
#[derive(Clone, Default)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
}

/// A request's path split at `namespaces/<ns>/<plural>`.
struct Target {
    collection: String,
    api_version: String,
    plural: String,
    group: String,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let i = segs.iter().position(|s| *s == "namespaces")?;
        let (group, api_version) = match segs.first() {
            Some(&"apis") => (segs.get(1)?.to_string(), segs.get(1..3)?.join("/")),
            _ => (String::new(), segs.get(1)?.to_string()),
        };
        let plural = segs.get(i + 2)?.to_string();
        Some(Target {
            collection: format!("/{}", segs[..=i + 2].join("/")),
            api_version,
            plural,
            group,
            name: segs.get(i + 3).map(|s| s.to_string()),
            sub: segs.get(i + 4).map(|s| s.to_string()),
        })
    }

    fn kind(&self) -> String {
        match self.plural.as_str() {
            "secrets" => "Secret",
            "configmaps" => "ConfigMap",
            "deployments" => "Deployment",
            "statefulsets" => "StatefulSet",
            "pods" => "Pod",
            "events" => "Event",
            "clientcertificatesets" => "ClientCertificateSet",
            other => other,
        }
        .to_string()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `a=b,c` as (key, wanted value): equality and existence only.
fn label_selector(s: &str) -> Vec<(String, Option<String>)> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.trim_start_matches('=').to_string())),
            None => (p.to_string(), None),
        })
        .collect()
}

fn partial(v: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": v["metadata"]})
}

impl Fake {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kube client whose every request this fake answers.
    pub fn client(&self) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let fake = fake.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await?;
                Ok::<_, kube::Error>(fake.answer(&parts, &bytes))
            }
        });
        Client::new(service, "default")
    }

    /// The store, for a test to read or change.
    pub fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.lock().store)
    }

    pub fn insert<K: Resource<DynamicType = ()> + Serialize>(&self, obj: &K) {
        self.with(|s| s.insert(obj));
    }

    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<K> {
        self.with(|s| s.get(ns, name))
    }

    /// Answers the requests with `method` whose path contains `path` with
    /// `code` and `message`, once or from now on.
    pub fn fail(&self, method: Method, path: &str, code: u16, message: &str, repeat: Repeat) {
        self.lock().failures.push(Failure {
            method,
            path: path.into(),
            code,
            message: message.into(),
            repeat,
        });
    }

    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Runs `hook` on the store right after the first request with
    /// `method` whose path contains `path` is answered: a change another
    /// client makes between certpin's read and its write.
    pub fn after(
        &self,
        method: Method,
        path: &str,
        hook: impl FnOnce(&mut Store) + Send + 'static,
    ) {
        self.lock()
            .hooks
            .push((method, path.to_string(), Box::new(hook)));
    }

    /// How many requests were made so far: a mark for [`Fake::since`].
    pub fn mark(&self) -> usize {
        self.lock().log.len()
    }

    /// Runs `f` over the requests made since `mark`.
    pub fn since<R>(&self, mark: usize, f: impl FnOnce(&[Logged]) -> R) -> R {
        f(&self.lock().log[mark..])
    }

    fn answer(&self, parts: &http::request::Parts, body: &[u8]) -> Response<Body> {
        let mut inner = self.lock();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let params = query_params(&query);
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let metadata_only = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
        let injected = inner
            .failures
            .iter()
            .position(|f| f.method == parts.method && path.contains(&f.path));
        let answer = match injected {
            Some(i) => {
                let f = &inner.failures[i];
                let refused = refuse(f.code, &f.message);
                if f.repeat == Repeat::Once {
                    inner.failures.remove(i);
                }
                Err(refused)
            }
            None => handle(
                &mut inner.store,
                &parts.method,
                &path,
                &params,
                content_type.as_deref(),
                metadata_only,
                body,
            ),
        };
        let (code, value) = match answer {
            Ok(ok) => ok,
            Err(Refused(code, status)) => (code, status),
        };
        inner.log.push(Logged {
            method: parts.method.clone(),
            path: path.clone(),
            query,
            content_type,
            field_manager: params.get("fieldManager").cloned(),
            code,
            body: body.to_vec(),
        });
        if let Some(i) = inner
            .hooks
            .iter()
            .position(|(m, p, _)| *m == parts.method && path.contains(p.as_str()))
        {
            let (_, _, hook) = inner.hooks.remove(i);
            hook(&mut inner.store);
        }
        Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
            .expect("a valid response")
    }
}

fn handle(
    store: &mut Store,
    method: &Method,
    path: &str,
    params: &BTreeMap<String, String>,
    content_type: Option<&str>,
    metadata_only: bool,
    body: &[u8],
) -> Answer {
    let Some(t) = Target::parse(path) else {
        return Err(refuse(404, format!("the server could not find {path}")));
    };
    let parse = || -> Result<Value, Refused> {
        serde_json::from_slice(body)
            .or_else(|_| yaml_serde::from_slice(body))
            .map_err(|e| refuse(400, format!("the body does not parse: {e}")))
    };
    match (method, t.name.as_deref(), t.sub.as_deref()) {
        (&Method::GET, None, None) => {
            let selector = label_selector(params.get("labelSelector").map_or("", String::as_str));
            let items = store.list(&t.collection, &selector);
            let meta = json!({"resourceVersion": store.revision.to_string()});
            Ok((
                200,
                if metadata_only {
                    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                       "metadata": meta, "items": items.iter().map(partial).collect::<Vec<_>>()})
                } else {
                    json!({"apiVersion": t.api_version, "kind": format!("{}List", t.kind()),
                       "metadata": meta, "items": items})
                },
            ))
        }
        (&Method::GET, Some(name), None) => {
            let what = described(&t.plural, &t.group, name);
            let live = store
                .live(&format!("{}/{name}", t.collection))
                .ok_or_else(|| refuse(404, format!("{what} not found")))?;
            Ok((200, if metadata_only { partial(&live) } else { live }))
        }
        (&Method::POST, None, None) => store.create(&t.collection, &t.plural, &t.group, parse()?),
        (&Method::PATCH, Some(name), sub) => {
            let key = format!("{}/{name}", t.collection);
            let what = described(&t.plural, &t.group, name);
            let part = match sub {
                None | Some("scale") => Sub::Main,
                Some("status") => Sub::Status,
                Some(other) => return Err(refuse(404, format!("no subresource {other}"))),
            };
            let answer = match content_type {
                Some(APPLY) if sub != Some("scale") => {
                    let manager = params
                        .get("fieldManager")
                        .ok_or_else(|| refuse(400, "fieldManager is required for apply"))?;
                    store.apply(&key, &what, manager, part, parse()?)?
                }
                Some(MERGE) => store.merge_patch(&key, &what, part, &parse()?)?,
                Some(JSON_PATCH) if sub.is_none() => store.json_patch(&key, &what, &parse()?)?,
                other => {
                    return Err(refuse(
                        415,
                        format!("the fake does not take {other:?} here"),
                    ));
                }
            };
            if sub == Some("scale") {
                let (code, live) = answer;
                let replicas = live.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
                return Ok((
                    code,
                    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                       "metadata": {"name": name, "namespace": live["metadata"]["namespace"],
                                    "uid": live["metadata"]["uid"],
                                    "resourceVersion": live["metadata"]["resourceVersion"]},
                       "spec": {"replicas": replicas}, "status": {"replicas": replicas}}),
                ));
            }
            Ok(answer)
        }
        _ => Err(refuse(
            405,
            format!("the fake does not answer {method} {path}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;

    fn deployment() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "app", "namespace": "n"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app"}},
                "template": {"metadata": {"labels": {"app": "app"}},
                    "spec": {"containers": [{"name": "a", "image": "i", "env": [{"name": "OWN", "value": "1"}]}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn an_apply_without_a_field_removes_it_and_keeps_the_base_and_other_managers() {
        let mut s = Store::default();
        s.insert(&deployment());
        let wiring = |env: Value| {
            json!({"metadata": {"name": "app", "labels": {"x": "1"}},
                "spec": {"template": {"spec": {"containers": [{"name": "a", "env": env}]}}}})
        };
        s.apply_as::<Deployment>(
            "m1",
            "n",
            "app",
            wiring(json!([{"name": "M1", "value": "v"}])),
        );
        s.apply_as::<Deployment>(
            "m2",
            "n",
            "app",
            json!({"metadata": {"name": "app", "annotations": {"y": "2"}}}),
        );
        let d: Deployment = s.get("n", "app").unwrap();
        let env: Vec<String> = d
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.clone())
            .collect();
        assert_eq!(env, ["OWN", "M1"]);
        assert_eq!(d.metadata.generation, Some(2));
        s.apply_as::<Deployment>("m1", "n", "app", json!({"metadata": {"name": "app"}}));
        let d: Deployment = s.get("n", "app").unwrap();
        assert_eq!(d.metadata.labels, None);
        assert_eq!(d.metadata.annotations.unwrap()["y"], "2");
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(c.env.as_ref().unwrap().len(), 1);
        assert_eq!(d.metadata.generation, Some(3));
    }

    #[test]
    fn a_stale_resource_version_is_a_conflict_and_a_merge_patch_takes_fields_over() {
        let mut s = Store::default();
        s.insert(&deployment());
        let key = key_of::<Deployment>("n", "app");
        let rv = s.version::<Deployment>("n", "app").unwrap();
        s.merge::<Deployment>("n", "app", json!({"spec": {"replicas": 0}}));
        let stale = json!({"metadata": {"name": "app", "resourceVersion": rv}});
        let Err(Refused(code, _)) = s.apply(&key, "d", "m", Sub::Main, stale) else {
            panic!("a stale precondition passed");
        };
        assert_eq!(code, 409);
        s.apply_as::<Deployment>(
            "m",
            "n",
            "app",
            json!({"metadata": {"name": "app", "annotations": {"r": "1"}}}),
        );
        s.merge::<Deployment>(
            "n",
            "app",
            json!({"metadata": {"annotations": {"r": null}}}),
        );
        let d: Deployment = s.get("n", "app").unwrap();
        assert_eq!(d.metadata.annotations.unwrap_or_default().get("r"), None);
        assert_eq!(d.spec.unwrap().replicas, Some(0));
    }

    #[test]
    fn queries_and_selectors_decode() {
        let q = query_params("labelSelector=app%3Dshop%2Ctier&fieldManager=certpin&force=true");
        assert_eq!(q["fieldManager"], "certpin");
        assert_eq!(
            label_selector(&q["labelSelector"]),
            [
                ("app".to_string(), Some("shop".to_string())),
                ("tier".to_string(), None)
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        let t = Target::parse("/apis/apps/v1/namespaces/n/deployments/app/scale").unwrap();
        assert_eq!(
            (
                t.collection.as_str(),
                t.api_version.as_str(),
                t.group.as_str()
            ),
            ("/apis/apps/v1/namespaces/n/deployments", "apps/v1", "apps")
        );
        assert_eq!(
            (t.name.as_deref(), t.sub.as_deref()),
            (Some("app"), Some("scale"))
        );
        let t = Target::parse("/api/v1/namespaces/n/pods").unwrap();
        assert_eq!((t.api_version.as_str(), t.kind().as_str()), ("v1", "Pod"));
        assert_eq!(t.name, None);
    }
}
