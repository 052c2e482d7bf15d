//! The Kubernetes client: kube's own stack, with a retry policy that
//! leaves one answer to the caller (see [`Retry`]). Delete when kube's
//! retry policy can be told not to retry a status for some requests.
//!
//! This module used to be a copy of kube's client builder that set
//! TCP_NODELAY (kube leaves Nagle's algorithm on), for writes that waited
//! on delayed ACKs with kube 0.x. Measured again with kube 5.0
//! (`certpin-bench workarounds`, 2026-11-30, 200–400 sequential applies per
//! client, alternating blocks): median 5.6 ms with kube's client against
//! 6.3 ms with TCP_NODELAY (4 KiB), 9.7 against 9.2 ms (300 B), 10.9
//! against 11.0 ms (16 KiB): no difference beyond noise, so the copy went.

use http::{Request, Response, StatusCode};
use kube::client::ClientBuilder;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};
use tower::BoxError;
use tower::buffer::BufferLayer;
use tower::retry::{Policy, RetryLayer};

use crate::operator::error::Error;

/// kube's client stack with kube's retries replaced by [`Retry`]. A retry
/// clones the service it wraps, and kube's stack is boxed, so a buffer (as
/// kube's `Client` puts in front of any stack) goes between them.
pub fn build(mut config: Config) -> Result<Client, Error> {
    let retry = std::mem::replace(&mut config.default_retry, false);
    let builder = ClientBuilder::try_from(config)?;
    Ok(if retry {
        builder
            .with_layer(&BufferLayer::new(1024))
            .with_layer(&RetryLayer::new(Retry(RetryPolicy::server_retry())))
            .build()
    } else {
        builder.build()
    })
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
