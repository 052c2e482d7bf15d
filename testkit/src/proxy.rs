//! A counting proxy between one program and the API server: plain HTTP on
//! loopback in, the admin kubeconfig's client out. It counts the program's
//! requests by verb, so "writes when idle" is measured outside certpin, not
//! reported by certpin about itself. It can also answer writes with 409
//! Conflict, as the API server does for a stale resourceVersion (certpin's
//! fault tests use this), and keep watches of Secrets silent.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;

#[derive(Default, Debug)]
pub struct Counts {
    /// POST, PUT, PATCH and DELETE.
    pub writes: AtomicU64,
    /// GET without watch=true.
    pub reads: AtomicU64,
    pub watches: AtomicU64,
    /// Writes answered with an injected 409.
    pub conflicts: AtomicU64,
    /// Every request by Kubernetes verb and resource ("patch deployments",
    /// "list secrets", "watch configmaps"), as the API server's audit log
    /// would name it.
    pub by_verb: Mutex<BTreeMap<String, u64>>,
}

/// Faults to inject.
#[derive(Default, Debug)]
pub struct Faults {
    /// Answer the first write to each object (method and path) with 409
    /// Conflict; the retry of it goes through.
    pub conflict_first_write: AtomicBool,
    /// Hold every watch of Secrets without an answer (the lists still go
    /// through): the program misses each change to a Secret, as with a
    /// watch that broke silently, and sees it only where it reads one.
    pub silent_secret_watches: AtomicBool,
    seen: Mutex<HashSet<String>>,
}

impl Faults {
    /// Forgets which writes were refused: each is refused once more.
    pub fn reset(&self) {
        if let Ok(mut s) = self.seen.lock() {
            s.clear();
        }
    }

    fn conflict(&self, method: &Method, path: &str) -> bool {
        self.conflict_first_write.load(Ordering::Relaxed)
            && self
                .seen
                .lock()
                .is_ok_and(|mut s| s.insert(format!("{method} {path}")))
    }
}

impl Counts {
    /// A copy of the counts by verb and resource.
    pub fn by_verb(&self) -> BTreeMap<String, u64> {
        self.by_verb.lock().map(|m| m.clone()).unwrap_or_default()
    }
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

pub struct Proxy {
    pub counts: Arc<Counts>,
    pub faults: Arc<Faults>,
    pub kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Upstream {
    client: kube::Client,
    counts: Arc<Counts>,
    faults: Arc<Faults>,
}

/// Starts a proxy and writes a kubeconfig for it to `dir/<name>.kubeconfig`.
pub async fn start(client: kube::Client, dir: &Path, name: &str) -> Result<Proxy> {
    let counts = Arc::new(Counts::default());
    let faults = Arc::new(Faults::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().fallback(forward).with_state(Upstream {
        client,
        counts: counts.clone(),
        faults: faults.clone(),
    });
    // TCP_NODELAY on each accepted connection, as the API server (Go) sets
    // it: with Nagle on, a response written in two parts waits for the
    // client's delayed ACK (40 ms), which the proxy would add to every write
    // it measures.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "proxy stopped");
        }
    });
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: p\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             users:\n- name: p\n  user: {{}}\ncontexts:\n- name: p\n  context: {{cluster: p, user: p}}\ncurrent-context: p\n"
        ),
    )
    .with_context(|| format!("writing {}", kubeconfig.display()))?;
    Ok(Proxy {
        counts,
        faults,
        kubeconfig,
        task,
    })
}

const HOP_BY_HOP: [header::HeaderName; 5] = [
    header::HOST,
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::AUTHORIZATION,
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !HOP_BY_HOP.contains(k) {
            to.append(k.clone(), v.clone());
        }
    }
}

async fn forward(State(up): State<Upstream>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let watch = parts
        .uri
        .query()
        .is_some_and(|q| q.contains("watch=true") || q.contains("watch=1"));
    let (counter, write) = match parts.method {
        Method::GET if watch => (&up.counts.watches, false),
        Method::GET | Method::HEAD | Method::OPTIONS => (&up.counts.reads, false),
        _ => (&up.counts.writes, true),
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut m) = up.counts.by_verb.lock() {
        *m.entry(verb_and_resource(&parts.method, parts.uri.path(), watch))
            .or_default() += 1;
    }
    if watch
        && up.faults.silent_secret_watches.load(Ordering::Relaxed)
        && verb_and_resource(&parts.method, parts.uri.path(), watch) == "watch secrets"
    {
        // The client's read timeout (minutes) ends it; it watches again.
        std::future::pending::<()>().await;
    }
    if write && up.faults.conflict(&parts.method, parts.uri.path()) {
        up.counts.conflicts.fetch_add(1, Ordering::Relaxed);
        return conflict(parts.uri.path());
    }
    let bytes = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(path);
    if let Some(h) = out.headers_mut() {
        copy_headers(&parts.headers, h);
    }
    let out = match out.body(kube::client::Body::from(bytes.to_vec())) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match up.client.send(out).await {
        Ok(resp) => {
            let (rparts, rbody) = resp.into_parts();
            let mut builder = Response::builder().status(rparts.status);
            if let Some(h) = builder.headers_mut() {
                copy_headers(&rparts.headers, h);
            }
            builder
                .body(Body::new(rbody))
                .unwrap_or_else(|e| error(StatusCode::BAD_GATEWAY, &e.to_string()))
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

/// A request named as the API server's authorizer names it: the verb (get
/// or list by whether the path names an object), the resource and any
/// subresource ("patch deployments/scale").
pub fn verb_and_resource(method: &Method, path: &str, watch: bool) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/GROUP/VERSION/...; then namespaces/NS/ or not.
    let rest: &[&str] = match parts.as_slice() {
        ["api", _v, rest @ ..] => rest,
        ["apis", _g, _v, rest @ ..] => rest,
        _ => return format!("{} {path}", method.as_str().to_lowercase()),
    };
    let rest = match rest {
        ["namespaces", _ns, r, more @ ..] => {
            let mut v = vec![*r];
            v.extend_from_slice(more);
            v
        }
        other => other.to_vec(),
    };
    let (resource, named, sub) = match rest.as_slice() {
        [r] => (*r, false, None),
        [r, _name] => (*r, true, None),
        [r, _name, sub, ..] => (*r, true, Some(*sub)),
        // A group version's discovery document.
        [] => return format!("{} {path}", method.as_str().to_lowercase()),
    };
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    match sub {
        Some(sub) => format!("{verb} {resource}/{sub}"),
        None => format!("{verb} {resource}"),
    }
}

fn error(code: StatusCode, msg: &str) -> Response {
    let mut r = Response::new(Body::from(msg.to_string()));
    *r.status_mut() = code;
    r
}

/// What the API server answers a write with a stale resourceVersion.
fn conflict(path: &str) -> Response {
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("Operation cannot be fulfilled on {path}: the object has been modified; please apply your changes to the latest version and try again"),
        "reason": "Conflict", "details": {}, "code": 409,
    });
    let mut r = Response::new(Body::from(status.to_string()));
    *r.status_mut() = StatusCode::CONFLICT;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
