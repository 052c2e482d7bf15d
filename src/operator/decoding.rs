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
//! decoded once even when many passes ask for it together. What is cached,
//! by content, is the verdict: the facts of a valid certificate (never its
//! key or chain) or why it was refused, within a byte bound; a content no
//! set names any more is forgotten. A pass that must re-encode a file it
//! found in the cache decodes it again. The runtime, and with it
//! `/healthz`, other sets and the watches, never waits on a decode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use super::lock::lock;
use super::memory::Key;
use crate::pkcs12::{self, Budget, Cancel, Decoded, Problem, Reason, Summary};

type Outcome = Result<Arc<Decoded>, Problem>;

/// What the cache keeps of a decode.
type Verdict = Result<Arc<Summary>, Problem>;

/// A verdict, and the decoded certificate when this call decoded it.
pub type Decoding = Result<(Arc<Summary>, Option<Arc<Decoded>>), Problem>;

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

/// The verdicts kept, in bytes (about 1 KiB each): tens of thousands of
/// distinct files. Past it, verdicts no set names go first.
const CACHE_BYTES: usize = 16 << 20;

/// The cheap lane's budget: 30 times what OpenSSL 3 writes, 3 times
/// keytool's, a few milliseconds of CPU.
const CHEAP_WORK: u64 = 100_000;

pub struct DecodeCache {
    verdicts: Mutex<Verdicts>,
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
            verdicts: Mutex::default(),
            flights: Mutex::default(),
            lanes: Lanes {
                cheap: Arc::new(Semaphore::new((2 * limits.parallelism).max(4))),
                costly: Arc::new(Semaphore::new(limits.parallelism.max(1))),
                deadline: limits.deadline,
            },
            counter,
        }
    }

    /// Decodes (or finds the verdict on) a PKCS12 file, decoding it even
    /// when found if `full` (to re-encode it); also returns the content key
    /// the verdict is kept under, which callers hash into the input hash.
    pub async fn decode_pkcs12(
        &self,
        data: &[u8],
        password: &str,
        full: bool,
    ) -> (Decoding, [u8; 32]) {
        let key = pkcs12::content_key(data, password);
        if let Some(hit) = self.cached(&key, full) {
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

    pub async fn decode_pem(&self, crt: &[u8], key_pem: &[u8], full: bool) -> (Decoding, [u8; 32]) {
        let key = pkcs12::pem_content_key(crt, key_pem);
        if let Some(hit) = self.cached(&key, full) {
            return (hit, key);
        }
        let (crt, key_pem) = (crt.to_vec(), Zeroizing::new(key_pem.to_vec()));
        let value = self
            .get_or(key, || false, move |_| pkcs12::decode_pem(&crt, &key_pem))
            .await;
        (value, key)
    }

    /// A hit answers without copying the file for a decode: a refusal
    /// always, a valid certificate unless it is wanted whole.
    fn cached(&self, key: &[u8; 32], full: bool) -> Option<Decoding> {
        match lock(&self.verdicts).get(key)? {
            Ok(summary) if !full => Some(Ok((summary, None))),
            Ok(_) => None,
            Err(problem) => Some(Err(problem)),
        }
    }

    /// `set` now names these contents: the verdicts on contents no set
    /// names any more are forgotten.
    pub fn used_by(&self, set: &Key, keys: Vec<[u8; 32]>) {
        lock(&self.verdicts).used_by(set, keys);
    }

    async fn get_or(
        &self,
        key: [u8; 32],
        costly: impl FnOnce() -> bool,
        decode: impl Fn(&mut Budget) -> Result<Decoded, Problem> + Send + Sync + 'static,
    ) -> Decoding {
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
        let decoding = value.map(|d| (Arc::new(d.summary()), Some(d)));
        let verdict = decoding
            .as_ref()
            .map(|(s, _)| s.clone())
            .map_err(Clone::clone);
        lock(&self.verdicts).insert(key, verdict);
        lock(&self.flights).remove(&key);
        decoding
    }
}

/// The verdicts by content, which sets name which content, and their size.
#[derive(Default)]
struct Verdicts {
    by_content: HashMap<[u8; 32], (Verdict, usize)>,
    bytes: usize,
    /// Each set's contents, and how many sets name each content.
    named: HashMap<Key, Vec<[u8; 32]>>,
    names: HashMap<[u8; 32], usize>,
}

impl Verdicts {
    fn get(&self, key: &[u8; 32]) -> Option<Verdict> {
        self.by_content.get(key).map(|(v, _)| v.clone())
    }

    fn insert(&mut self, key: [u8; 32], verdict: Verdict) {
        let size = size_of(&verdict);
        if self.bytes + size > CACHE_BYTES {
            self.forget_unnamed();
        }
        if self.bytes + size > CACHE_BYTES {
            self.by_content.clear();
            self.bytes = 0;
        }
        if let Some((_, old)) = self.by_content.insert(key, (verdict, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
    }

    fn used_by(&mut self, set: &Key, keys: Vec<[u8; 32]>) {
        for k in &keys {
            *self.names.entry(*k).or_default() += 1;
        }
        let before = match keys.is_empty() {
            true => self.named.remove(set),
            false => self.named.insert(set.clone(), keys),
        };
        for k in before.unwrap_or_default() {
            let left = self.names.get_mut(&k).map(|n| {
                *n -= 1;
                *n
            });
            if left == Some(0) {
                self.names.remove(&k);
                self.remove(&k);
            }
        }
    }

    fn forget_unnamed(&mut self) {
        let unnamed: Vec<[u8; 32]> = (self.by_content.keys())
            .filter(|k| !self.names.contains_key(*k))
            .copied()
            .collect();
        unnamed.iter().for_each(|k| self.remove(k));
    }

    fn remove(&mut self, key: &[u8; 32]) {
        if let Some((_, size)) = self.by_content.remove(key) {
            self.bytes -= size;
        }
    }
}

/// About what a verdict holds in memory.
fn size_of(v: &Verdict) -> usize {
    let text = match v {
        Ok(s) => {
            let f = &s.facts;
            [&f.subject, &f.issuer, &f.serial, &f.encryption_detail]
                .iter()
                .map(|t| t.len())
                .sum::<usize>()
                + s.jvm_refusals.iter().map(String::len).sum::<usize>()
        }
        Err(p) => p.message.len(),
    };
    256 + text
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
        cache.cached(&[7; 32], false).expect("a hit").unwrap_err();
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

    fn valid() -> Decoded {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pkcs12/openssl-ec256-modern.p12"
        ))
        .expect("a fixture");
        pkcs12::decode_pkcs12(&file, "changeit").expect("it decodes")
    }

    #[tokio::test]
    async fn a_valid_verdict_keeps_the_facts_not_the_key_and_a_whole_decode_runs_again() {
        let cache = DecodeCache::new(Limits::default(), Default::default());
        let got = cache.get_or([3; 32], || false, |_| Ok(valid())).await;
        assert!(
            matches!(got, Ok((_, Some(_)))),
            "the decoding call gets it whole"
        );
        let hit = cache.cached(&[3; 32], false).expect("a hit");
        assert!(matches!(hit, Ok((_, None))), "a hit has the facts only");
        assert!(
            cache.cached(&[3; 32], true).is_none(),
            "whole: decoded again"
        );
    }

    #[tokio::test]
    async fn verdicts_go_when_no_set_names_their_content() {
        let cache = DecodeCache::new(Limits::default(), Default::default());
        let (a, b) = (Key::set("ns", "a"), Key::set("ns", "b"));
        cache.get_or([1; 32], || false, |_| Ok(valid())).await.ok();
        cache.get_or([2; 32], || false, |_| problem()).await.ok();
        cache.used_by(&a, vec![[1; 32], [2; 32]]);
        cache.used_by(&b, vec![[1; 32]]);
        // a's file was rotated: its old content goes, the shared one stays.
        cache.used_by(&a, vec![[1; 32]]);
        assert!(cache.cached(&[2; 32], false).is_none());
        assert!(cache.cached(&[1; 32], false).is_some());
        // Both sets deleted: nothing is left.
        cache.used_by(&a, Vec::new());
        assert!(cache.cached(&[1; 32], false).is_some(), "b still names it");
        cache.used_by(&b, Vec::new());
        assert!(cache.cached(&[1; 32], false).is_none());
        assert_eq!(lock(&cache.verdicts).bytes, 0);
    }

    #[test]
    fn the_verdicts_stay_within_their_byte_bound() {
        let mut v = Verdicts::default();
        let summary = Arc::new(valid().summary());
        let named = Key::set("ns", "a");
        v.insert([0; 32], Ok(summary.clone()));
        v.used_by(&named, vec![[0; 32]]);
        for i in 1..=u16::MAX {
            let mut key = [0; 32];
            key[..2].copy_from_slice(&i.to_be_bytes());
            v.insert(key, Ok(summary.clone()));
            assert!(v.bytes <= CACHE_BYTES);
        }
        assert!(
            v.get(&[0; 32]).is_some(),
            "a named verdict outlives the unnamed"
        );
    }
}
