//! Runtime: timers. Each shard keeps its deadlines in one ordered map; the loop wakes the
//! expired ones every turn and sleeps in the kernel no longer than the nearest one. A timer
//! is checked against the loop's per-turn time and fired against the clock.
use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use super::executor;

#[derive(Default)]
pub struct Timers {
    pending: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
}

impl Timers {
    /// The nearest deadline, if any timer is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.first_key_value().map(|((at, _), _)| *at)
    }

    /// Removes and returns the wakers of every timer due at `now`.
    pub fn expired(&mut self, now: Instant, into: &mut Vec<Waker>) {
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            into.push(entry.remove());
        }
    }
}

/// Runs `work` until `deadline` (none: to its end); `None` when the deadline came first.
pub async fn within<T>(deadline: Option<Instant>, work: impl Future<Output = T>) -> Option<T> {
    let Some(deadline) = deadline else {
        return Some(work.await);
    };
    futures_lite::future::or(async { Some(work.await) }, async {
        sleep_until(deadline).await;
        None
    })
    .await
}

/// The shard loop's time for this turn (read once per turn; the clock off a shard thread):
/// never ahead of the clock, so a deadline it has passed is due.
pub fn turn_time() -> Instant {
    executor::with(|rt| rt.now()).unwrap_or_else(Instant::now)
}

/// Completes after `duration` (measured from the clock: a timer never fires early).
pub fn sleep(duration: Duration) -> Sleep {
    let now = Instant::now();
    Sleep {
        deadline: now + duration,
        read_at: Some(now),
        key: None,
    }
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        read_at: None,
        key: None,
    }
}

pub struct Sleep {
    deadline: Instant,
    /// The clock reading `sleep` made (a zero duration is due at once).
    read_at: Option<Instant>,
    /// Set while registered with the shard's timers.
    key: Option<(Instant, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A deadline not yet passed by the turn's time is left to the loop, which fires it
        // against the clock: the common case (a timer armed and polled before it is due)
        // reads no clock here.
        let known = self
            .read_at
            .map_or_else(turn_time, |at| at.max(turn_time()));
        if known >= self.deadline {
            self.unregister();
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let key = self.key;
        self.key = executor::with(|rt| {
            let mut timers = rt.timers.borrow_mut();
            let key = key.unwrap_or_else(|| {
                timers.next_id += 1;
                (deadline, timers.next_id)
            });
            // Replacing a waker of this same task (the one polling) is never its last drop.
            timers.pending.insert(key, cx.waker().clone());
            key
        });
        Poll::Pending
    }
}

impl Sleep {
    fn unregister(&mut self) {
        if let Some(key) = self.key.take() {
            let waker = executor::with(|rt| rt.timers.borrow_mut().pending.remove(&key));
            drop(waker); // outside the borrow: it may be a task's last reference
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}
