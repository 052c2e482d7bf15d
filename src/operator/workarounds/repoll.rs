//! Drives the controller's result stream. kube-runtime 5.0 splits the
//! trigger stream into its Ok and Err items (`utils::SplitCase`); when the
//! half polled second finds an item meant for the other half it returns
//! Pending without arranging a wake-up, so that item, and every watch event
//! queued behind it, waits for an unrelated wake-up. After an API server
//! restart this stalled certpin's watches for minutes (connections were
//! opened and then not polled until the server gave up on their TLS
//! handshake). Polling again on a short tick bounds such a stall to the tick.
//!
//! Checked 2026-11-30: kube-runtime 5.0's `SplitCase::poll_next` still
//! returns `Pending` for the other half's item without waking it. Delete
//! when it does (then tests/control_plane_restart.rs shows whether the
//! watches still stall).

use std::time::Duration;

use futures::{Stream, StreamExt};

/// How often the stream is polled without a wake-up.
pub const REPOLL: Duration = Duration::from_millis(200);

/// Hands every item of `stream` to `each` until the stream ends, polling it
/// at least every `every` even when nothing woke it.
pub async fn drive<S: Stream>(stream: S, every: Duration, mut each: impl FnMut(S::Item)) {
    let mut stream = std::pin::pin!(stream);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(item) => each(item),
                None => return,
            },
            _ = tick.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::ArcWake;
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Poll;

    /// Pending once without a wake-up (as SplitCase does), then one item,
    /// then the end.
    fn lost_wakeup() -> impl Stream<Item = u32> {
        let mut polls = 0;
        futures::stream::poll_fn(move |_cx| {
            polls += 1;
            match polls {
                1 => Poll::Pending,
                2 => Poll::Ready(Some(7)),
                _ => Poll::Ready(None),
            }
        })
    }

    #[tokio::test]
    async fn an_item_behind_a_lost_wakeup_is_still_delivered() {
        let mut seen = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(5),
            drive(lost_wakeup(), Duration::from_millis(10), |i| seen.push(i)),
        )
        .await
        .expect("drive returns once the stream ends");
        assert_eq!(seen, [7]);
    }

    #[test]
    fn without_repolling_the_same_stream_stalls() {
        // The failure `drive` exists for: polled plainly, the stream is
        // Pending and nothing will ever wake the task that polls it.
        struct Counting(AtomicUsize);
        impl ArcWake for Counting {
            fn wake_by_ref(arc_self: &Arc<Self>) {
                arc_self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = futures::task::waker(wakes.clone());
        let mut plain = std::pin::pin!(lost_wakeup().for_each(|_| async {}));
        let poll = plain
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        assert!(poll.is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "no wake-up was arranged");
    }
}
