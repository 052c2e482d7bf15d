//! What every pass shares: the client, the configuration, the decoder, the
//! metrics and the memory kept between passes.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use super::decoding::{DecodeCache, Limits};
use super::memory::Memory;
use super::metrics::Metrics;
use super::workarounds::events::Publisher;

/// The field manager for every write certpin makes (server-side apply).
pub const MANAGER: &str = "certpin";

pub struct Context {
    pub client: Client,
    pub memory: Memory,
    pub events: Publisher,
    pub cache: DecodeCache,
    pub metrics: Arc<Metrics>,
    /// Every set is reconciled at least this often, changed or not.
    pub resync: Duration,
    /// How long a set's inputs must be quiet before a pass writes.
    pub quiet: Duration,
}

impl Context {
    #[cfg(test)]
    pub fn new(client: Client, resync: Duration) -> Arc<Context> {
        Context::with_limits(client, resync, Limits::default(), Duration::ZERO)
    }

    pub fn with_limits(
        client: Client,
        resync: Duration,
        decoding: Limits,
        quiet: Duration,
    ) -> Arc<Context> {
        let metrics = Arc::new(Metrics::default());
        Arc::new(Context {
            events: Publisher::new(client.clone(), "certpin", std::env::var("POD_NAME").ok()),
            client,
            memory: Memory::default(),
            resync,
            quiet,
            cache: DecodeCache::new(decoding, metrics.decodes.clone()),
            metrics,
        })
    }
}
