//! The Kubernetes client, built as kube's `ClientBuilder` builds it except
//! that its TCP connections set TCP_NODELAY and its retry policy leaves one
//! answer to the caller (see [`Retry`]).
//!
//! kube leaves Nagle's algorithm on. A request that leaves in two segments
//! (TLS records for the headers and the body) then waits for the API
//! server's delayed ACK, 40 ms on Linux, whenever the server's kernel is
//! not acknowledging at once. Sequential applies do not show it in their
//! median (certpin-bench workarounds, 2026-11-30: no difference), but a
//! rotation's pass does: on the bench bed (2026-12-02, N = 10, 20
//! rotations) half of the passes took about 45 ms more, in their reads or
//! their writes, and with the loopback route set to acknowledge at once
//! (`ip route ... quickack 1`) none did. client-go (and so Reloader) sets
//! TCP_NODELAY, as Go does for every TCP connection. Delete when kube's
//! builder sets it or lets a caller set it.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};
use tower::retry::{Policy, RetryLayer};
use tower::{BoxError, ServiceBuilder};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{DefaultOnEos, TraceLayer};
use tracing::Span;

use crate::operator::error::Error;

pub fn build(config: Config) -> Result<Client, Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(Retry(RetryPolicy::server_retry()))),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(trace_layer())
        .map_err(BoxError::from)
        .service(client);
    Ok(Client::new(service, config.default_namespace))
}

/// kube's retry policy (429, 503 and 504 are tried again, up to 15 times),
/// except for a 504 to a GET of one object at a resourceVersion: the API
/// server's watch cache did not reach that version within its wait (about
/// 3 s). Trying again would wait again, up to 15 times; the caller
/// (`freshness::get_opt`) reads from etcd instead, at once.
#[derive(Clone)]
struct Retry(RetryPolicy);

impl<Res> Policy<Request<kube::client::Body>, Response<Res>, BoxError> for Retry {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<kube::client::Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        if let Ok(res) = result
            && res.status() == StatusCode::GATEWAY_TIMEOUT
            && is_versioned_get(req)
        {
            return None;
        }
        self.0.retry(req, result)
    }

    fn clone_request(
        &mut self,
        req: &Request<kube::client::Body>,
    ) -> Option<Request<kube::client::Body>> {
        Policy::<_, Response<Res>, BoxError>::clone_request(&mut self.0, req)
    }
}

/// A GET of one object (kube tags its requests with the verb) with a
/// resourceVersion other than "0".
fn is_versioned_get<B>(req: &Request<B>) -> bool {
    req.extensions().get::<&'static str>() == Some(&"get")
        && req.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|p| p.starts_with("resourceVersion=") && p != "resourceVersion=0")
        })
}

/// Not under `certpin::operator`: its debug log is the passes', and one
/// line per request would drown them (`RUST_LOG=certpin::http=debug`).
const HTTP_TARGET: &str = "certpin::http";

/// Requests as kube's client logs them: a debug span per request with its
/// method and URL (never a body), and an error on failure.
#[allow(clippy::type_complexity)]
fn trace_layer() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    impl Fn(&Request<kube::client::Body>) -> Span + Clone,
    impl Fn(&Request<kube::client::Body>, &Span) + Clone,
    impl Fn(&Response<hyper::body::Incoming>, Duration, &Span) + Clone,
    (),
    DefaultOnEos,
    impl Fn(ServerErrorsFailureClass, Duration, &Span) + Clone,
> {
    TraceLayer::new_for_http()
        .make_span_with(|req: &Request<kube::client::Body>| {
            tracing::debug_span!(
                target: HTTP_TARGET,
                "HTTP",
                http.method = %req.method(),
                http.url = %req.uri(),
                http.status_code = tracing::field::Empty,
            )
        })
        .on_request(|_: &Request<kube::client::Body>, _: &Span| tracing::debug!(target: HTTP_TARGET, "requesting"))
        .on_response(
            |res: &Response<hyper::body::Incoming>, latency: Duration, span: &Span| {
                span.record("http.status_code", res.status().as_u16());
                tracing::debug!(
                    target: HTTP_TARGET,
                    status = res.status().as_u16(),
                    latency_us = latency.as_micros() as u64,
                    "response"
                );
            },
        )
        .on_body_chunk(())
        .on_failure(|class: ServerErrorsFailureClass, _: Duration, _: &Span| {
            tracing::error!(target: HTTP_TARGET, %class, "request failed")
        })
}

/// A client from the environment (in-cluster, or KUBECONFIG), as
/// `kube::Client::try_default` makes one.
pub async fn infer() -> Result<Client, Error> {
    let config = Config::infer()
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    build(config)
}

#[cfg(test)]
mod tests {
    use super::is_versioned_get;
    use http::Request;

    fn req(uri: &str, verb: Option<&'static str>) -> Request<()> {
        let mut r = Request::get(uri).body(()).unwrap();
        if let Some(v) = verb {
            r.extensions_mut().insert(v);
        }
        r
    }

    #[test]
    fn only_a_get_of_one_object_at_a_version_is_left_to_the_caller() {
        let s = "/api/v1/namespaces/n/secrets/s";
        assert!(is_versioned_get(&req(
            &format!("{s}?resourceVersion=42"),
            Some("get")
        )));
        assert!(!is_versioned_get(&req(s, Some("get"))));
        assert!(!is_versioned_get(&req(
            &format!("{s}?resourceVersion=0"),
            Some("get")
        )));
        // A list or a watch with a version keeps kube's retries.
        let l = "/api/v1/namespaces/n/secrets?resourceVersion=42";
        assert!(!is_versioned_get(&req(l, Some("list"))));
        assert!(!is_versioned_get(&req(
            &format!("{l}&watch=true"),
            Some("watch")
        )));
        assert!(!is_versioned_get(&req(
            &format!("{s}?resourceVersion=42"),
            None
        )));
    }
}
