//! Decoding certificates off the async runtime, once per content.
//!
//! Decoding is dominated by key derivation, which a file controls, and
//! every derivation is charged to the decode's budget before it runs
//! (pkcs12::Budget). Decodes run on blocking threads in two lanes, at most
//! so many at once: a file starts in the cheap lane with a budget capped at
//! `CHEAP_WORK` (what real tools write) unless its outer layer alone asks
//! for more; one that needs more (its inner layers show only once outer
//! safes are decrypted) stops at the cap and starts over in the costly lane
//! with the whole budget, so a costly file delays only other costly ones.
//! At its deadline a decode is reported too costly (and cached so) and its
//! budget cancelled: the thread stops before its next derivation, and its
//! slot is freed only when the thread ends, so the decodes alive at once
//! never exceed the slots. Each distinct content (file and password) is
//! decoded once even when many passes ask for it together, and the result
//! is cached by content. The runtime, and with it `/healthz`, other sets
//! and the watches, never waits on a decode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::lock::lock;
use crate::pkcs12::{self, Budget, Cancel, Decoded, Problem, Reason};

type Outcome = Result<Arc<Decoded>, Problem>;

/// A decode, run once per lane it tries, charging the budget it is given.
type Decode = Arc<dyn Fn(&mut Budget) -> Result<Decoded, Problem> + Send + Sync>;

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

/// The cheap lane's budget: 30 times what OpenSSL 3 writes, 3 times
/// keytool's, a few milliseconds of CPU.
const CHEAP_WORK: u64 = 100_000;

pub struct DecodeCache {
    entries: Mutex<HashMap<[u8; 32], Outcome>>,
    /// Decodes under way, by content key: later askers wait on the same one.
    flights: Mutex<HashMap<[u8; 32], Shared<BoxFuture<'static, Outcome>>>>,
    lanes: Lanes,
    /// Decodes run (cache misses), as a metric.
    counter: prometheus_client::metrics::counter::Counter,
}

/// The two lanes' slots. A slot is held by the decode's thread until it
/// ends, so these bound the decode threads alive at once.
#[derive(Clone)]
struct Lanes {
    /// The cheap lane: twice the costly one's slots, at least four.
    cheap: Arc<Semaphore>,
    costly: Arc<Semaphore>,
    deadline: Duration,
}

impl DecodeCache {
    pub fn new(limits: Limits, counter: prometheus_client::metrics::counter::Counter) -> Self {
        DecodeCache {
            entries: Mutex::default(),
            flights: Mutex::default(),
            lanes: Lanes {
                cheap: Arc::new(Semaphore::new((2 * limits.parallelism).max(4))),
                costly: Arc::new(Semaphore::new(limits.parallelism.max(1))),
                deadline: limits.deadline,
            },
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
        // The outer structure alone (no key derivation), read only on a
        // miss: a millisecond even for the largest file accepted.
        let costly = || pkcs12::inspect(data).is_ok_and(|s| s.work() > CHEAP_WORK);
        let (owned, password) = (data.to_vec(), Zeroizing::new(password.to_string()));
        let value = self
            .get_or(key, costly, move |budget| {
                pkcs12::decode_pkcs12_with(&owned, &password, budget)
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
            .get_or(key, || false, move |_| pkcs12::decode_pem(&crt, &key_pem))
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
        decode: impl Fn(&mut Budget) -> Result<Decoded, Problem> + Send + Sync + 'static,
    ) -> Outcome {
        if let Some(hit) = self.cached(&key) {
            return hit;
        }
        let costly = costly();
        let flight = lock(&self.flights)
            .entry(key)
            .or_insert_with(|| {
                self.counter.inc();
                let lanes = self.lanes.clone();
                async move { lanes.run(costly, Arc::new(decode)).await }
                    .boxed()
                    .shared()
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

/// How one lane's attempt ended.
enum Attempt {
    Done(Outcome),
    /// Stopped at the lane's cap, without a verdict: try the costly lane.
    OverCap,
}

impl Lanes {
    /// The cheap lane first (capped) unless `costly`, then the costly one.
    async fn run(self, costly: bool, decode: Decode) -> Outcome {
        if !costly {
            let budget = Budget::capped(CHEAP_WORK);
            if let Attempt::Done(outcome) = self.attempt(&self.cheap, budget, decode.clone()).await
            {
                return outcome;
            }
        }
        match self.attempt(&self.costly, Budget::new(), decode).await {
            Attempt::Done(outcome) => outcome,
            Attempt::OverCap => Err(Problem::new(
                Reason::TooCostly,
                "the file asks for more key derivation than certpin spends on one file",
            )),
        }
    }

    /// Runs `decode` on a blocking thread once a slot of `lane` is free.
    /// The thread holds the slot until it ends; past the deadline the
    /// caller gets a refusal and the budget is cancelled, so the thread
    /// stops before its next derivation.
    async fn attempt(&self, lane: &Arc<Semaphore>, budget: Budget, decode: Decode) -> Attempt {
        let Ok(permit) = lane.clone().acquire_owned().await else {
            return Attempt::Done(Err(Problem::new(
                Reason::TooCostly,
                "the decoder is shut down",
            )));
        };
        let cancel = Cancel::default();
        // Whichever way this attempt ends (answered, deadline, or nobody
        // waiting any more), the thread stops deriving.
        let _stop = CancelOnDrop(cancel.clone());
        let mut budget = budget.with_cancel(cancel);
        let task = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let result = decode(&mut budget);
            (result, budget.over_cap())
        });
        match tokio::time::timeout(self.deadline, task).await {
            Ok(Ok((_, true))) => Attempt::OverCap,
            Ok(Ok((result, false))) => Attempt::Done(result.map(Arc::new)),
            Ok(Err(_)) => Attempt::Done(Err(Problem::new(
                Reason::Corrupt,
                "the file could not be decoded (the decoder failed on it)",
            ))),
            Err(_) => Attempt::Done(Err(Problem::new(
                Reason::TooCostly,
                format!(
                    "decoding the file took longer than {} s: its encrypted parts ask for more key derivation \
                     than certpin spends on one file; export it again with the tool's default settings",
                    self.deadline.as_secs()
                ),
            ))),
        }
    }
}

/// Cancels a decode's budget when its waiter goes away.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
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
                move |_| {
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

    /// Runs until its budget is cancelled, then until the test lets it go
    /// (a derivation that had already started): how long it ran on.
    fn stubborn(
        release: std::sync::mpsc::Receiver<()>,
    ) -> impl Fn(&mut Budget) -> Result<Decoded, Problem> {
        let release = Mutex::new(release);
        move |budget: &mut Budget| {
            while !budget.cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = lock(&release).recv();
            problem()
        }
    }

    #[tokio::test]
    async fn a_decode_past_its_deadline_is_cancelled_and_keeps_its_slot_until_it_ends() {
        let limits = Limits {
            parallelism: 1,
            deadline: Duration::from_millis(100),
        };
        let cache = DecodeCache::new(limits, Default::default());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let err = cache
            .get_or([1; 32], || true, stubborn(rx))
            .await
            .unwrap_err();
        assert_eq!(err.reason, Reason::TooCostly);
        assert!(err.message.contains("took longer than 0 s"), "{err}");
        // Its budget was cancelled (stubborn got past its loop), but the
        // thread still runs: the one costly slot is not free.
        let next = cache.get_or([2; 32], || true, |_| problem());
        tokio::pin!(next);
        let waited = tokio::time::timeout(Duration::from_millis(300), &mut next).await;
        assert!(
            waited.is_err(),
            "a second decode started while the first thread ran"
        );
        tx.send(()).unwrap();
        let quick = tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the slot was not freed when the thread ended");
        assert_eq!(quick.unwrap_err().reason, Reason::Corrupt);
    }

    #[tokio::test]
    async fn decode_threads_alive_never_exceed_the_slots() {
        let limits = Limits {
            parallelism: 1,
            deadline: Duration::from_millis(20),
        };
        let cache = DecodeCache::new(limits, Default::default());
        let (alive, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let ask = |i: u8| {
            let (alive, most) = (alive.clone(), most.clone());
            cache.get_or(
                [i; 32],
                move || i.is_multiple_of(2),
                move |budget| {
                    let now = alive.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Runs on past its deadline, as a derivation would.
                    while !budget.cancelled() {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    std::thread::sleep(Duration::from_millis(30));
                    alive.fetch_sub(1, Ordering::SeqCst);
                    problem()
                },
            )
        };
        let results = futures::future::join_all((0..24).map(ask)).await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap_err().reason == Reason::TooCostly)
        );
        // One costly slot, four cheap ones.
        assert!(
            most.load(Ordering::SeqCst) <= 5,
            "{} alive",
            most.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_file_over_the_cheap_cap_starts_over_in_the_costly_lane() {
        let cache = DecodeCache::new(Limits::default(), Default::default());
        let caps = Arc::new(Mutex::new(Vec::new()));
        let seen = caps.clone();
        let result = cache
            .get_or(
                [3; 32],
                || false,
                move |budget| {
                    // An inner layer asking for 200,000 once an outer one opened.
                    let fits = budget.admit(&[200_000], String::new).is_ok();
                    lock(&seen).push(fits);
                    problem()
                },
            )
            .await;
        assert_eq!(result.unwrap_err().reason, Reason::Corrupt);
        assert_eq!(*lock(&caps), [false, true], "cheap lane, then costly");
    }

    #[tokio::test]
    async fn cheap_files_do_not_queue_behind_costly_ones() {
        let limits = Limits {
            parallelism: 1,
            deadline: Duration::from_secs(60),
        };
        let cache = DecodeCache::new(limits, Default::default());
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Mutex::new(rx);
        let costly = cache.get_or(
            [1; 32],
            || true,
            move |_| {
                let _ = lock(&rx).recv();
                problem()
            },
        );
        let cheap = async {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                cache.get_or([2; 32], || false, |_| problem()),
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
