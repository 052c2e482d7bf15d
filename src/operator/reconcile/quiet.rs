//! Step 3c: a pass that is about to write waits until the set's inputs
//! have been quiet for the window, so that a burst of changes is one
//! restart. The reads, validation and plan come first and hide in the
//! window; a change that arrives meanwhile supersedes the pass (the pass
//! that change triggers writes, from fresher reads).
//!
//! The window is `--debounce-ms`, or longer when certpin's own round trips
//! say the API server is slow (`Window`): a burst's changes come one API
//! round trip of their writer apart, and on a loaded API server that round
//! trip grows.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use crate::operator::context::Context;
use crate::operator::lock::lock;
use crate::resource::ClientCertificateSet;

/// A stream of changes that never pauses for the window is applied anyway
/// once it has gone on this long (and again each time after).
pub const MAX_HOLD: Duration = Duration::from_secs(10);

/// The longest window the round trip alone makes (a larger `--debounce-ms`
/// still holds).
const MAX_ADAPTED: Duration = Duration::from_secs(1);

/// Quiet since this long ends a burst (for `MAX_HOLD`).
const BURST_GAP: Duration = Duration::from_secs(1);

/// The changes to each set's inputs, by `namespace/name`.
#[derive(Default)]
pub struct Touches {
    by_set: Mutex<HashMap<String, Touch>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Touch {
    /// How many changes so far.
    pub count: u64,
    /// The latest.
    pub at: Instant,
    /// The first of the burst the latest belongs to.
    pub first: Instant,
}

impl Touches {
    pub fn touch(&self, key: &str, now: Instant) {
        let mut by_set = lock(&self.by_set);
        match by_set.get_mut(key) {
            Some(t) => {
                if now.saturating_duration_since(t.at) >= BURST_GAP {
                    t.first = now;
                }
                t.count += 1;
                t.at = now;
            }
            None => {
                by_set.insert(
                    key.to_string(),
                    Touch {
                        count: 1,
                        at: now,
                        first: now,
                    },
                );
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<Touch> {
        lock(&self.by_set).get(key).copied()
    }

    pub fn count(&self, key: &str) -> u64 {
        self.get(key).map_or(0, |t| t.count)
    }

    pub fn forget(&self, key: &str) {
        lock(&self.by_set).remove(key);
    }
}

/// The quiet window: the floor, one and a half times certpin's recent
/// write round trip (its server-side applies cost the API server more than
/// the merge patch a script's changes usually are), or four times the
/// pass's typical read (a write takes two to four reads' time; the median
/// of its concurrent reads, see `dereference`), whichever is
/// longest. The write estimate's weight halves every
/// `STALE_HALF_LIFE` without a write: a load that has passed should not
/// hold rotations for long, and an operator that has not written lately
/// still has its pass's reads, measured just now.
pub struct Window {
    floor: Duration,
    /// Exponentially weighted mean of the last writes' round trips, in
    /// seconds, and when the last was measured (`None` before the first).
    round_trip: Mutex<Option<(f64, Instant)>>,
}

const STALE_HALF_LIFE: Duration = Duration::from_secs(5);

impl Window {
    pub fn new(floor: Duration) -> Self {
        Window {
            floor,
            round_trip: Mutex::new(None),
        }
    }

    /// One write's round trip, ended at `now`. The earlier mean counts for
    /// as much as it would in the window: a load that passed a minute ago
    /// must not outweigh the round trip measured now (blended at full
    /// weight, it was still three quarters of the estimate after the first
    /// new write).
    pub fn observe(&self, took: Duration, now: Instant) {
        let mut mean = lock(&self.round_trip);
        let s = took.as_secs_f64();
        let m = match *mean {
            Some((m, at)) => s + 0.75 * (m - s) * fade(at, now),
            None => s,
        };
        *mean = Some((m, now));
    }

    /// The write round trip estimated at `now` (faded), in seconds.
    fn writes(&self, now: Instant) -> f64 {
        lock(&self.round_trip).map_or(0.0, |(m, at)| m * fade(at, now))
    }

    /// The window a measured round trip `adapted` makes: at least the
    /// floor, at most `MAX_ADAPTED` (unless the floor is larger), none when
    /// the floor is 0.
    fn bounded(&self, adapted: Duration) -> Duration {
        if self.floor.is_zero() {
            return Duration::ZERO;
        }
        self.floor.max(adapted.min(MAX_ADAPTED))
    }

    /// The window for a pass whose typical read took `reads`, at `now`.
    pub fn get(&self, reads: Duration, now: Instant) -> Duration {
        self.bounded(Duration::from_secs_f64(1.5 * self.writes(now)).max(4 * reads))
    }

    /// The window once the pass's own early write has landed, `took` after
    /// it began. The write round trip is then measured just now, so the
    /// reads no longer stand in for it (at N = 10,000 four typical reads
    /// were up to three of the early write's round trips); the estimate
    /// still counts if it is longer.
    pub fn after_write(&self, took: Duration, now: Instant) -> Duration {
        let writes = self.writes(now).max(took.as_secs_f64());
        self.bounded(Duration::from_secs_f64(1.5 * writes))
    }
}

/// How much a write estimate measured `at` still counts at `now`: half
/// after each `STALE_HALF_LIFE`.
fn fade(at: Instant, now: Instant) -> f64 {
    let age = now.saturating_duration_since(at).as_secs_f64();
    0.5f64.powf(age / STALE_HALF_LIFE.as_secs_f64())
}

#[derive(Debug, PartialEq)]
pub enum Settled {
    /// Write now.
    Go,
    /// An input changed after this pass read it: leave the writes to the
    /// pass that change triggered.
    Superseded,
}

/// What to do at `now`, given the set's touches and the count the pass
/// began with: go, be superseded, or wait until the returned instant.
pub fn decide(
    touch: Option<Touch>,
    began: u64,
    window: Duration,
    now: Instant,
) -> Result<Settled, Instant> {
    let Some(t) = touch else {
        return Ok(Settled::Go);
    };
    if t.at.saturating_duration_since(t.first) >= MAX_HOLD {
        return Ok(Settled::Go);
    }
    if t.count != began {
        return Ok(Settled::Superseded);
    }
    let until = t.at + window;
    if now >= until {
        Ok(Settled::Go)
    } else {
        Err(until)
    }
}

/// Waits until the set may write (see `decide`) while `early`, the early
/// write of the rendered objects (`early::write`: whether it wrote), runs;
/// `began`: the set's touch count when the pass began
/// (`waiting::begin`); `reads`: its typical read's round trip. Returns
/// once both are done.
pub async fn settle(
    ctx: &Context,
    set: &ClientCertificateSet,
    ns: &str,
    began: u64,
    reads: Duration,
    early: impl Future<Output = bool>,
) -> (Settled, bool) {
    let key = super::waiting::set_key(ns, &set.name_any());
    let started = Instant::now();
    let mut early = std::pin::pin!(early);
    // Whether the early write wrote, and how long it took, once it is done.
    let mut wrote: Option<(bool, Duration)> = None;
    loop {
        let touch = ctx.waits.touched.get(&key);
        let now = Instant::now();
        let window = match wrote {
            Some((true, took)) => ctx.quiet.after_write(took, now),
            _ => ctx.quiet.get(reads, now),
        };
        match decide(touch, began, window, now) {
            // A change that lands while the early write is still in flight
            // supersedes the pass too: decide again once it is done.
            Ok(Settled::Go) if wrote.is_none() => {
                wrote = Some((early.as_mut().await, started.elapsed()));
            }
            Ok(settled) => {
                tracing::debug!(
                    window_ms = window.as_secs_f64() * 1e3,
                    // What the window would be without the early write's
                    // own measure (for comparing the two).
                    reads_window_ms = ctx.quiet.get(reads, now).as_secs_f64() * 1e3,
                    write_estimate_ms = ctx.quiet.writes(now) * 1e3,
                    early_write_ms = wrote.map_or(0.0, |(_, took)| took.as_secs_f64() * 1e3),
                    since_change_ms = touch.map_or(0.0, |t| {
                        now.saturating_duration_since(t.at).as_secs_f64() * 1e3
                    }),
                    "quiet window"
                );
                let wrote = match wrote {
                    Some((w, _)) => w,
                    None => early.await,
                };
                return (settled, wrote);
            }
            Err(until) if wrote.is_none() => {
                tokio::select! {
                    w = &mut early => wrote = Some((w, started.elapsed())),
                    () = tokio::time::sleep_until(until.into()) => {}
                }
            }
            Err(until) => tokio::time::sleep_until(until.into()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(20);

    #[test]
    fn an_untouched_set_and_a_quiet_one_go_at_once() {
        let t0 = Instant::now();
        assert_eq!(decide(None, 0, W, t0), Ok(Settled::Go));
        let touches = Touches::default();
        touches.touch("ns/s", t0);
        assert_eq!(decide(touches.get("ns/s"), 1, W, t0 + W), Ok(Settled::Go));
    }

    #[test]
    fn a_pass_waits_for_the_window_after_the_latest_change() {
        let t0 = Instant::now();
        let touches = Touches::default();
        touches.touch("ns/s", t0);
        let t1 = t0 + Duration::from_millis(5);
        touches.touch("ns/s", t1);
        assert_eq!(decide(touches.get("ns/s"), 2, W, t1), Err(t1 + W));
        assert_eq!(
            decide(touches.get("ns/s"), 2, W, t1 + W - Duration::from_millis(1)),
            Err(t1 + W)
        );
    }

    #[test]
    fn a_change_after_the_pass_began_supersedes_it() {
        let t0 = Instant::now();
        let touches = Touches::default();
        touches.touch("ns/s", t0);
        let began = touches.count("ns/s");
        touches.touch("ns/s", t0 + Duration::from_millis(5));
        assert_eq!(
            decide(touches.get("ns/s"), began, W, t0 + Duration::from_secs(1)),
            Ok(Settled::Superseded)
        );
    }

    #[test]
    fn a_stream_that_never_pauses_is_applied_after_the_hold() {
        let t0 = Instant::now();
        let touches = Touches::default();
        let mut now = t0;
        while now < t0 + MAX_HOLD {
            touches.touch("ns/s", now);
            now += Duration::from_millis(10);
        }
        touches.touch("ns/s", now);
        // Even a pass that began before the latest change goes.
        assert_eq!(decide(touches.get("ns/s"), 1, W, now), Ok(Settled::Go));
        // A second of quiet starts a new burst, held again.
        let later = now + BURST_GAP;
        touches.touch("ns/s", later);
        let began = touches.count("ns/s");
        assert_eq!(decide(touches.get("ns/s"), began, W, later), Err(later + W));
    }

    fn close(got: Duration, ms: f64) -> bool {
        (got.as_secs_f64() * 1e3 - ms).abs() < 0.01
    }

    #[test]
    fn after_the_early_write_its_round_trip_stands_for_the_reads() {
        let t0 = Instant::now();
        let w = Window::new(W);
        let reads = Duration::from_millis(15);
        w.observe(Duration::from_millis(16), t0);
        assert_eq!(w.get(reads, t0), Duration::from_millis(60), "four reads");
        let got = w.after_write(Duration::from_millis(16), t0);
        assert!(
            close(got, 24.0),
            "1.5 times the write, not four reads: {got:?}"
        );
        // A longer recent estimate still counts.
        for _ in 0..40 {
            w.observe(Duration::from_millis(40), t0);
        }
        let got = w.after_write(Duration::from_millis(16), t0);
        assert!(close(got, 60.0), "{got:?}");
        // An estimate that has faded does not shorten the write just made.
        let later = t0 + 20 * STALE_HALF_LIFE;
        let got = w.after_write(Duration::from_millis(30), later);
        assert!(close(got, 45.0), "{got:?}");
        assert_eq!(
            w.after_write(Duration::from_millis(5), later),
            W,
            "the floor"
        );
        assert_eq!(w.after_write(Duration::from_secs(5), later), MAX_ADAPTED);
        assert_eq!(
            Window::new(Duration::ZERO).after_write(Duration::from_secs(1), t0),
            Duration::ZERO,
            "0: no wait"
        );
    }

    #[test]
    fn the_window_is_the_floor_or_the_round_trips_measured() {
        let t0 = Instant::now();
        let fast = Duration::from_millis(2);
        let w = Window::new(W);
        assert_eq!(w.get(fast, t0), W);
        w.observe(Duration::from_millis(5), t0);
        assert_eq!(w.get(fast, t0), W, "a fast API server: the floor");
        for _ in 0..40 {
            w.observe(Duration::from_millis(50), t0);
        }
        let got = w.get(fast, t0);
        assert!(
            got > Duration::from_millis(71) && got <= Duration::from_millis(75),
            "1.5 times the writes' round trip: {got:?}"
        );
        // Without writes the estimate fades: half after the half-life.
        let later = w.get(fast, t0 + STALE_HALF_LIFE);
        assert!(
            later > Duration::from_millis(35) && later <= Duration::from_millis(38),
            "{later:?}"
        );
        assert_eq!(w.get(fast, t0 + 10 * STALE_HALF_LIFE), W);
        // Slow reads in this pass count at once.
        assert_eq!(
            w.get(Duration::from_millis(30), t0 + 10 * STALE_HALF_LIFE),
            Duration::from_millis(120)
        );
        for _ in 0..40 {
            w.observe(Duration::from_secs(5), t0);
        }
        assert_eq!(w.get(fast, t0), MAX_ADAPTED);
        assert_eq!(
            Window::new(Duration::ZERO).get(Duration::from_secs(1), t0),
            Duration::ZERO,
            "0: no wait"
        );
        // A load that has passed: its mean is not blended in at full weight
        // when writes resume.
        let quiet = t0 + 12 * STALE_HALF_LIFE;
        let fresh = Duration::from_millis(8);
        w.observe(fresh, quiet);
        assert_eq!(w.get(fast, quiet), W, "the fresh round trip alone");
        let slow = Duration::from_millis(40);
        for _ in 0..4 {
            w.observe(slow, quiet);
        }
        let got = w.get(fast, quiet);
        assert!(
            got > Duration::from_millis(40) && got < Duration::from_millis(50),
            "writes that stay slow still widen it: {got:?}"
        );
        let big = Window::new(Duration::from_secs(2));
        big.observe(Duration::from_millis(50), t0);
        assert_eq!(big.get(fast, t0), Duration::from_secs(2));
    }
}
