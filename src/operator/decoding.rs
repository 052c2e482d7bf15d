//! Decoding certificates off the async runtime, once per content.
//!
//! Decoding is dominated by key derivation, which a file controls (iteration
//! counts, number of encrypted parts). So decodes run on blocking threads in
//! two lanes: files whose structure asks for little key derivation (what
//! real tools write) in one, the costly rest in the other, at most
//! `parallelism` at once, so a costly file delays only other costly ones;
//! each distinct content (file and password)
//! is decoded once even when many passes ask for it together, and the
//! result is cached by content; a decode that outlives its deadline is
//! reported as too costly (and cached so), its thread left to finish
//! without holding a slot. The runtime, and with it `/healthz`, other sets
//! and the watches, never waits on a decode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::lock::lock;
use crate::pkcs12::{self, Decoded, Problem, Reason};

type Outcome = Result<Arc<Decoded>, Problem>;

/// How many decodes run at once, and how long one may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub parallelism: usize,
    pub deadline: Duration,
}

impl Default for Limits {
    /// One decode per CPU the process may use (cgroup quotas included); ten
    /// seconds, forty times what the costliest file within the key
    /// derivation budget takes in a release build.
    fn default() -> Self {
        Limits {
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            deadline: Duration::from_secs(10),
        }
    }
}

/// Enough for thousands of sets; past it the cache starts over.
const CACHE_LIMIT: usize = 8192;

/// Up to this many key-derivation iterations (as the file's structure
/// shows) a file goes in the cheap lane: 30 times what OpenSSL 3 writes,
/// 3 times keytool's, a few milliseconds of CPU.
const CHEAP_WORK: u64 = 100_000;

pub struct DecodeCache {
    entries: Mutex<HashMap<[u8; 32], Outcome>>,
    /// Decodes under way, by content key: later askers wait on the same one.
    flights: Mutex<HashMap<[u8; 32], Shared<BoxFuture<'static, Outcome>>>>,
    /// The cheap lane: twice the costly one's slots, at least four.
    cheap: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    deadline: Duration,
    /// Decodes run (cache misses), as a metric.
    counter: prometheus_client::metrics::counter::Counter,
}

impl DecodeCache {
    pub fn new(limits: Limits, counter: prometheus_client::metrics::counter::Counter) -> Self {
        DecodeCache {
            entries: Mutex::default(),
            flights: Mutex::default(),
            cheap: Arc::new(Semaphore::new((2 * limits.parallelism).max(4))),
            slots: Arc::new(Semaphore::new(limits.parallelism.max(1))),
            deadline: limits.deadline,
            counter,
        }
    }

    /// Decodes (or finds) a PKCS12 file; also returns the content key the
    /// result is cached under, which callers hash into the input hash.
    pub async fn decode_pkcs12(&self, data: &[u8], password: &str) -> (Outcome, [u8; 32]) {
        let key = pkcs12::content_key(data, password);
        if let Some(hit) = self.cached(&key) {
            return (hit, key);
        }
        // The structure alone (no key derivation), read only on a miss: a
        // millisecond even for the largest file accepted.
        let costly = || pkcs12::inspect(data).is_ok_and(|s| s.work() > CHEAP_WORK);
        let (owned, password) = (data.to_vec(), Zeroizing::new(password.to_string()));
        let value = self
            .get_or(key, costly, move || {
                pkcs12::decode_pkcs12(&owned, &password)
            })
            .await;
        (value, key)
    }

    pub async fn decode_pem(&self, crt: &[u8], key_pem: &[u8]) -> (Outcome, [u8; 32]) {
        let key = pkcs12::pem_content_key(crt, key_pem);
        if let Some(hit) = self.cached(&key) {
            return (hit, key);
        }
        let (crt, key_pem) = (crt.to_vec(), Zeroizing::new(key_pem.to_vec()));
        let value = self
            .get_or(key, || false, move || pkcs12::decode_pem(&crt, &key_pem))
            .await;
        (value, key)
    }

    /// A hit answers without copying the file for a decode.
    fn cached(&self, key: &[u8; 32]) -> Option<Outcome> {
        lock(&self.entries).get(key).cloned()
    }

    async fn get_or(
        &self,
        key: [u8; 32],
        costly: impl FnOnce() -> bool,
        decode: impl FnOnce() -> Result<Decoded, Problem> + Send + 'static,
    ) -> Outcome {
        if let Some(hit) = self.cached(&key) {
            return hit;
        }
        let lane = if costly() { &self.slots } else { &self.cheap };
        let flight = lock(&self.flights)
            .entry(key)
            .or_insert_with(|| {
                self.counter.inc();
                let (slots, deadline) = (lane.clone(), self.deadline);
                off_runtime(slots, deadline, decode).boxed().shared()
            })
            .clone();
        let value = flight.await;
        let mut entries = lock(&self.entries);
        if entries.len() >= CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(key, value.clone());
        drop(entries);
        lock(&self.flights).remove(&key);
        value
    }
}

/// Runs `decode` on a blocking thread once a slot is free. Past the
/// deadline the caller gets a refusal and the slot is freed; the thread
/// runs on (a thread cannot be stopped) but no longer counts.
async fn off_runtime(
    slots: Arc<Semaphore>,
    deadline: Duration,
    decode: impl FnOnce() -> Result<Decoded, Problem> + Send + 'static,
) -> Outcome {
    let Ok(permit) = slots.acquire_owned().await else {
        return Err(Problem::new(Reason::TooCostly, "the decoder is shut down"));
    };
    let held = Arc::new(Mutex::new(Some(permit)));
    let in_thread = held.clone();
    let task = tokio::task::spawn_blocking(move || {
        let result = decode();
        lock(&in_thread).take();
        result
    });
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(result)) => result.map(Arc::new),
        Ok(Err(_)) => Err(Problem::new(
            Reason::Corrupt,
            "the file could not be decoded (the decoder failed on it)",
        )),
        Err(_) => {
            lock(&held).take();
            Err(Problem::new(
                Reason::TooCostly,
                format!(
                    "decoding the file took longer than {} s: its encrypted parts ask for more key derivation \
                     than certpin spends on one file; export it again with the tool's default settings",
                    deadline.as_secs()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn problem() -> Result<Decoded, Problem> {
        Err(Problem::new(Reason::Corrupt, "x"))
    }

    #[tokio::test]
    async fn one_decode_per_content_however_many_ask_at_once() {
        let cache = DecodeCache::new(Limits::default(), Default::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let ask = || {
            let runs = runs.clone();
            cache.get_or(
                [7; 32],
                || true,
                move || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    problem()
                },
            )
        };
        let results = futures::future::join_all((0..8).map(|_| ask())).await;
        assert!(results.iter().all(Result::is_err));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // And later askers are answered from the cache.
        ask().await.unwrap_err();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_decode_past_its_deadline_is_too_costly_and_frees_its_slot() {
        let limits = Limits {
            parallelism: 1,
            deadline: Duration::from_millis(100),
        };
        let cache = DecodeCache::new(limits, Default::default());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let slow = cache.get_or(
            [1; 32],
            || true,
            move || {
                // Runs until the test lets it go.
                let _ = rx.recv();
                problem()
            },
        );
        let err = slow.await.unwrap_err();
        assert_eq!(err.reason, Reason::TooCostly);
        // The one slot is free again although that thread still runs.
        let quick = tokio::time::timeout(
            Duration::from_secs(5),
            cache.get_or([2; 32], || true, problem),
        )
        .await
        .expect("the slot was not freed");
        assert_eq!(quick.unwrap_err().reason, Reason::Corrupt);
        tx.send(()).unwrap();
    }

    #[tokio::test]
    async fn cheap_files_do_not_queue_behind_costly_ones() {
        let limits = Limits {
            parallelism: 1,
            deadline: Duration::from_secs(60),
        };
        let cache = DecodeCache::new(limits, Default::default());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let costly = cache.get_or(
            [1; 32],
            || true,
            move || {
                let _ = rx.recv();
                problem()
            },
        );
        let cheap = async {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                cache.get_or([2; 32], || false, problem),
            )
            .await
            .expect("a cheap file waited for the costly one");
            tx.send(()).unwrap();
            r
        };
        let (c, q) = futures::join!(costly, cheap);
        assert_eq!(
            (c.unwrap_err().reason, q.unwrap_err().reason),
            (Reason::Corrupt, Reason::Corrupt)
        );
    }
}
