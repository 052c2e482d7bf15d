//! Reads answered from the API server's watch cache, never older than what
//! certpin has already seen.
//!
//! A GET without a resourceVersion is a quorum read from etcd. With one, the
//! API server answers from its watch cache as soon as that cache is at least
//! that new ("not older than"). Measured on the test bed (2000 GETs of one
//! Secret): the API server spends about half the CPU and etcd almost none
//! (4.5 ms + 1.6 ms of CPU per quorum GET against 2.2 ms + 0.05 ms).
//!
//! The version certpin asks for is a per-kind high-water mark: the newest
//! resourceVersion it has seen for that kind in a watch event, a write's
//! response or a quorum read. So a read reflects every change certpin was told of
//! and every write it made, which is all a quorum read gave it that it acts
//! on. Before anything is seen (start-up), or where resourceVersions are not
//! numbers, reads stay quorum reads; a cache that cannot catch up in time
//! (another API server behind a load balancer, lagging) answers 504, and the
//! read is repeated as a quorum read.
//!
//! Re-measured 2026-11-30 (`certpin-bench workarounds`, 400 GETs of one
//! 2 KiB Secret per variant, alternating blocks of 50): quorum 2.5 ms of
//! API server and 0.85 ms of etcd CPU per read, median 2.8 ms; at the mark
//! 1.5 ms and 0.27 ms, median 1.7 ms. Delete when a quorum GET costs the
//! API server what a cached one does (served from its watch cache), or when
//! kube-runtime's reflectors can answer reads consistently.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kube::api::GetParams;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// The newest resourceVersion seen for one kind (0: none yet), unless
/// marks are off.
#[derive(Default, Debug)]
pub struct Mark(AtomicU64, AtomicBool);

impl Mark {
    /// Raises the mark to `rv` if that is newer. resourceVersions are
    /// opaque to clients in general; with etcd they are its revision
    /// numbers. One that is not a number is ignored.
    pub fn observe(&self, rv: Option<&str>) {
        if let Some(v) = rv.and_then(|s| s.parse::<u64>().ok()) {
            self.0.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// Raises the mark to the object's resourceVersion.
    pub fn observe_object<K: Resource>(&self, o: &K) {
        self.observe(o.meta().resource_version.as_deref());
    }

    fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    fn params(&self) -> Option<GetParams> {
        if self.1.load(Ordering::Relaxed) {
            return None;
        }
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            v => Some(GetParams::at(&v.to_string())),
        }
    }
}

/// The marks of the kinds certpin reads.
#[derive(Default, Debug)]
pub struct Marks {
    pub secrets: Mark,
    pub config_maps: Mark,
    pub deployments: Mark,
    pub stateful_sets: Mark,
}

impl Marks {
    /// Whether resourceVersions compare as numbers on this API server.
    pub fn comparable(&self) -> bool {
        !self.secrets.1.load(Ordering::Relaxed)
    }

    /// Every read becomes a quorum read: for API servers whose
    /// resourceVersions are not promised to be comparable.
    pub fn disable(&self) {
        for m in [
            &self.secrets,
            &self.config_maps,
            &self.deployments,
            &self.stateful_sets,
        ] {
            m.1.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether an API server of this version promises that resourceVersions
/// compare as numbers (KEP-5504, Kubernetes 1.35): only then is "the newest
/// version seen" a meaningful mark. Older servers (certpin supports 1.30+),
/// or a version that does not parse, get quorum reads.
pub fn marks_supported(major: &str, minor: &str) -> bool {
    let digits = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    };
    matches!((digits(major), digits(minor)), (Some(1), Some(m)) if m >= 35)
}

/// `get_opt`, answered from the watch cache when `mark` allows it.
pub async fn get_opt<K>(api: &Api<K>, name: &str, mark: &Mark) -> kube::Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if let Some(params) = mark.params() {
        match api.get_with(name, &params).await {
            Ok(o) => return Ok(Some(o)),
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(None),
            // "Too large resource version": this API server's cache is behind
            // the mark. Ask etcd instead, and start the mark over from what
            // is seen next: were etcd restored from a backup (its revisions
            // lower than before), a mark that stayed up would make every read
            // wait for the cache in vain.
            Err(kube::Error::Api(s)) if s.code == 504 => {
                tracing::debug!(name, "watch cache behind the mark; quorum read");
                mark.reset();
            }
            Err(e) => return Err(e),
        }
    }
    let found = api.get_opt(name).await?;
    if let Some(o) = &found {
        mark.observe_object(o);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::{Mark, Marks, marks_supported};

    #[test]
    fn marks_are_used_from_kubernetes_1_35_on_and_off_they_read_from_etcd() {
        assert!(marks_supported("1", "35"));
        assert!(marks_supported("1", "36+"));
        assert!(!marks_supported("1", "34"));
        assert!(!marks_supported("1", "30+"));
        assert!(!marks_supported("1", ""));
        assert!(!marks_supported("2", "0"));
        let marks = Marks::default();
        marks.secrets.observe(Some("120"));
        assert!(marks.secrets.params().is_some());
        marks.disable();
        assert_eq!(marks.secrets.params(), None);
        marks.deployments.observe(Some("130"));
        assert_eq!(marks.deployments.params(), None);
    }

    #[test]
    fn the_mark_only_rises_and_ignores_what_is_not_a_number() {
        let m = Mark::default();
        assert_eq!(m.params(), None);
        m.observe(Some("120"));
        m.observe(Some("80"));
        m.observe(Some("opaque-token"));
        m.observe(None);
        assert_eq!(
            m.params().and_then(|p| p.resource_version),
            Some("120".into())
        );
        m.observe(Some("121"));
        assert_eq!(
            m.params().and_then(|p| p.resource_version),
            Some("121".into())
        );
    }
}
