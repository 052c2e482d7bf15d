//! The Kubernetes client, built as kube's `ClientBuilder` builds it except
//! that its TCP connections set TCP_NODELAY. kube leaves Nagle's algorithm
//! on; a request that leaves in two segments (TLS records for the headers
//! and the body) then waits for the API server's delayed ACK, 40 ms on
//! Linux, and certpin makes several writes per change. client-go (and so
//! Reloader) sets TCP_NODELAY, as Go does for every TCP connection.

use std::time::Duration;

use http::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{DefaultOnEos, TraceLayer};
use tracing::Span;

use super::error::Error;

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
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(trace_layer())
        .map_err(BoxError::from)
        .service(client);
    Ok(Client::new(service, config.default_namespace))
}

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
                "HTTP",
                http.method = %req.method(),
                http.url = %req.uri(),
                http.status_code = tracing::field::Empty,
            )
        })
        .on_request(|_: &Request<kube::client::Body>, _: &Span| tracing::debug!("requesting"))
        .on_response(
            |res: &Response<hyper::body::Incoming>, latency: Duration, span: &Span| {
                span.record("http.status_code", res.status().as_u16());
                tracing::debug!(
                    status = res.status().as_u16(),
                    latency_us = latency.as_micros() as u64,
                    "response"
                );
            },
        )
        .on_body_chunk(())
        .on_failure(|class: ServerErrorsFailureClass, _: Duration, _: &Span| {
            tracing::error!(%class, "request failed")
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
