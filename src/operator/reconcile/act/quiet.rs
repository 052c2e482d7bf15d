//! The quiet window: a pass that is about to write after an input changed
//! waits until the set's inputs have been quiet for `--debounce-ms`, so
//! that a burst of changes is one restart. The reads, validation and plan
//! come first and hide in the window; a change that arrives meanwhile
//! supersedes the pass (the pass that change triggers writes, from fresher
//! reads). A burst that never pauses holds a restart at most `MAX_HOLD`.

use std::time::{Duration, Instant};

use crate::operator::memory::{Key, Memory, Touch};

/// A stream of changes that never pauses for the window is applied anyway
/// once it has gone on this long (and again each time after).
pub const MAX_HOLD: Duration = Duration::from_secs(10);

#[derive(Debug, PartialEq)]
pub enum Settled {
    /// Write now.
    Go,
    /// An input changed after the pass read it: leave the writes to the
    /// pass that change triggered.
    Superseded,
}

/// Pure: whether a pass that began after `began` changes may write at
/// `now`, or when to look again.
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

/// Waits out the window of `set`, whose pass began after `began` changes.
pub async fn settle(memory: &Memory, set: &Key, began: u64, window: Duration) -> Settled {
    loop {
        match decide(memory.touches(set), began, window, Instant::now()) {
            Ok(settled) => return settled,
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
        let m = Memory::default();
        let s = Key::set("ns", "s");
        m.touch(&s, t0, W);
        assert_eq!(decide(m.touches(&s), 1, W, t0 + W), Ok(Settled::Go));
    }

    #[test]
    fn a_pass_waits_for_the_window_after_the_latest_change() {
        let t0 = Instant::now();
        let m = Memory::default();
        let s = Key::set("ns", "s");
        m.touch(&s, t0, W);
        let t1 = t0 + Duration::from_millis(5);
        m.touch(&s, t1, W);
        assert_eq!(decide(m.touches(&s), 2, W, t1), Err(t1 + W));
        assert_eq!(
            decide(m.touches(&s), 2, W, t1 + W - Duration::from_millis(1)),
            Err(t1 + W)
        );
    }

    #[test]
    fn a_change_after_the_pass_began_supersedes_it() {
        let t0 = Instant::now();
        let m = Memory::default();
        let s = Key::set("ns", "s");
        m.touch(&s, t0, W);
        let began = m.touches(&s).map_or(0, |t| t.count);
        m.touch(&s, t0 + Duration::from_millis(5), W);
        assert_eq!(
            decide(m.touches(&s), began, W, t0 + Duration::from_secs(1)),
            Ok(Settled::Superseded)
        );
    }

    #[test]
    fn a_stream_that_never_pauses_is_applied_after_the_hold() {
        let t0 = Instant::now();
        let m = Memory::default();
        let s = Key::set("ns", "s");
        let mut now = t0;
        while now < t0 + MAX_HOLD {
            m.touch(&s, now, W);
            now += Duration::from_millis(10);
        }
        m.touch(&s, now, W);
        // Even a pass that began before the latest change goes.
        assert_eq!(decide(m.touches(&s), 1, W, now), Ok(Settled::Go));
        // A window of quiet starts a new burst, held again.
        let later = now + W;
        m.touch(&s, later, W);
        let began = m.touches(&s).map_or(0, |t| t.count);
        assert_eq!(decide(m.touches(&s), began, W, later), Err(later + W));
    }

    #[tokio::test]
    async fn settle_sleeps_until_the_window_after_the_latest_change_has_passed() {
        let m = Memory::default();
        let s = Key::set("ns", "s");
        let t0 = Instant::now();
        m.touch(&s, t0, W);
        assert_eq!(settle(&m, &s, 1, W).await, Settled::Go);
        assert!(Instant::now() >= t0 + W);
    }
}
