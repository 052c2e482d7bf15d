//! What every reconcile shares: the client, the event recorder, the decode
//! cache and the read marks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;

use super::metrics::Metrics;
use super::workarounds::freshness::Marks;
use crate::pkcs12::{self, Decoded, Problem};

/// The field manager for every write certpin makes (server-side apply).
pub const MANAGER: &str = "certpin";

/// Decoded certificates by content key: decoding is dominated by key
/// derivation, so an unchanged Secret is never decoded twice.
type Entries = HashMap<[u8; 32], Result<Arc<Decoded>, Problem>>;

#[derive(Default)]
pub struct DecodeCache {
    entries: Mutex<Entries>,
    /// Decodes run (cache misses), as a metric.
    counter: prometheus_client::metrics::counter::Counter,
}

/// Enough for thousands of sets; past it the cache starts over.
const CACHE_LIMIT: usize = 8192;

impl DecodeCache {
    /// Decodes (or finds) a PKCS12 file; also returns the content key the
    /// result is cached under, which callers hash into the input hash.
    pub fn decode_pkcs12(
        &self,
        data: &[u8],
        password: &str,
    ) -> (Result<Arc<Decoded>, Problem>, [u8; 32]) {
        let key = pkcs12::content_key(data, password);
        (
            self.get_or(key, || pkcs12::decode_pkcs12(data, password)),
            key,
        )
    }

    pub fn decode_pem(
        &self,
        crt: &[u8],
        key_pem: &[u8],
    ) -> (Result<Arc<Decoded>, Problem>, [u8; 32]) {
        let key = pkcs12::pem_content_key(crt, key_pem);
        (self.get_or(key, || pkcs12::decode_pem(crt, key_pem)), key)
    }

    fn get_or(
        &self,
        key: [u8; 32],
        f: impl FnOnce() -> Result<Decoded, Problem>,
    ) -> Result<Arc<Decoded>, Problem> {
        if let Some(hit) = self.lock().get(&key) {
            return hit.clone();
        }
        self.counter.inc();
        let value = f().map(Arc::new);
        let mut entries = self.lock();
        if entries.len() >= CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(key, value.clone());
        value
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves a valid map: keep using it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Deployments certpin has just written, by `namespace/name`, with the
/// trigger property (`triggers::spec_and_annotations`) of the object the API
/// server returned. The watch event that echoes such a write is not a reason
/// for another pass: certpin already acted on everything before it.
#[derive(Default)]
pub struct OwnWrites {
    expected: Mutex<HashMap<String, u64>>,
}

impl OwnWrites {
    pub fn expect(&self, key: String, property: u64) {
        self.lock().insert(key, property);
    }

    /// Whether this event is the echo of certpin's last write (forgotten
    /// once seen: a later event with the same property is someone else's).
    pub fn is_echo(&self, key: &str, property: u64) -> bool {
        let mut expected = self.lock();
        if expected.get(key) == Some(&property) {
            expected.remove(key);
            true
        } else {
            false
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.expected.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Context {
    pub client: Client,
    pub own_writes: OwnWrites,
    /// How new a read must be (see `freshness`).
    pub marks: Marks,
    pub events: super::workarounds::events::Publisher,
    pub cache: DecodeCache,
    pub metrics: Arc<Metrics>,
    /// Every set is reconciled at least this often, changed or not.
    pub resync: std::time::Duration,
}

impl Context {
    pub fn new(client: Client, resync: std::time::Duration) -> Arc<Context> {
        let metrics = Arc::new(Metrics::default());
        Arc::new(Context {
            events: super::workarounds::events::Publisher::new(
                client.clone(),
                "certpin",
                std::env::var("POD_NAME").ok(),
            ),
            client,
            own_writes: OwnWrites::default(),
            marks: Marks::default(),
            resync,
            cache: DecodeCache {
                counter: metrics.decodes.clone(),
                ..DecodeCache::default()
            },
            metrics,
        })
    }
}
