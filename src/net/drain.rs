//! NET/IO layer: drain signals. Each listener generation on a shard has one; its connections
//! read it. Draining starts when the generation is modified or removed, or on server drain
//! (for `drain_type: DEFAULT`): HTTP connections close after their current response, idle
//! ones at once. It closes when the drain time is over: every connection still open ends.
use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

/// How far a drain has gone; only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
enum Phase {
    #[default]
    Serving,
    Draining,
    Closed,
}

#[derive(Default)]
pub struct DrainSignal {
    phase: Cell<Phase>,
    /// Wakers of the waits in progress, by slot; a slot is reused once its wait is dropped.
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl DrainSignal {
    pub fn is_draining(&self) -> bool {
        self.phase.get() >= Phase::Draining
    }

    /// Starts draining (if not yet) and wakes every waiter.
    pub fn start(&self) {
        self.advance(Phase::Draining);
    }

    /// Ends the drain: connections still open close now.
    pub fn close(&self) {
        self.advance(Phase::Closed);
    }

    fn advance(&self, to: Phase) {
        if self.phase.get() >= to {
            return;
        }
        self.phase.set(to);
        let woken: Vec<Waker> = self
            .waiters
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        woken.into_iter().for_each(Waker::wake);
    }

    /// Completes once draining has started.
    pub fn started(&self) -> DrainWait<'_> {
        self.wait(Phase::Draining)
    }

    /// Completes once the drain is over (connections must close).
    pub fn closed(&self) -> DrainWait<'_> {
        self.wait(Phase::Closed)
    }

    fn wait(&self, until: Phase) -> DrainWait<'_> {
        DrainWait {
            signal: self,
            until,
            slot: None,
        }
    }
}

/// A wait for a drain phase; gives its slot back when dropped.
pub struct DrainWait<'a> {
    signal: &'a DrainSignal,
    until: Phase,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let signal = self.signal;
        if signal.phase.get() >= self.until {
            return Poll::Ready(());
        }
        let mut waiters = signal.waiters.borrow_mut();
        let slot = *self
            .slot
            .get_or_insert_with(|| match signal.free.borrow_mut().pop() {
                Some(i) => i,
                None => {
                    waiters.push(None);
                    waiters.len() - 1
                }
            });
        // Raced against a connection's I/O this is polled on every wake: keep it cheap.
        match &waiters[slot] {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => waiters[slot] = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for DrainWait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.signal.waiters.borrow_mut()[slot] = None;
            self.signal.free.borrow_mut().push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, pin::pin, sync::Arc, task::Wake};

    use super::*;

    struct Flag(std::sync::atomic::AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Flag {
        fn take(&self) -> bool {
            self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn waiters_are_woken_once_and_slots_are_reused() {
        let signal = DrainSignal::default();
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        {
            let mut first = pin!(signal.started());
            assert!(first.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(
            signal.free.borrow().len(),
            1,
            "a dropped wait frees its slot"
        );
        let mut second = pin!(signal.started());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.waiters.borrow().len(), 1, "the slot was reused");
        signal.start();
        assert!(flag.take());
        assert!(second.as_mut().poll(&mut cx).is_ready());
        assert!(signal.is_draining());
    }

    #[test]
    fn closed_waits_through_draining() {
        let signal = DrainSignal::default();
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut closed = pin!(signal.closed());
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        signal.start();
        assert!(flag.take(), "every phase change wakes");
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        signal.close();
        assert!(flag.take());
        assert!(closed.as_mut().poll(&mut cx).is_ready());
        signal.start();
        assert!(
            pin!(signal.closed()).poll(&mut cx).is_ready(),
            "a drain never goes back"
        );
    }
}
