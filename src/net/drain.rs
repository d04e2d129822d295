//! NET/IO layer: the shard's drain signal. Set when the process starts draining; HTTP
//! connections waiting idle for their next request are woken by it and close, instead of
//! holding the drain open until their idle timeout.
use std::{
    cell::{Cell, RefCell},
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

#[derive(Default)]
pub struct DrainSignal {
    draining: Cell<bool>,
    /// Wakers of the waits in progress, by slot; a slot is reused once its wait is dropped.
    waiters: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl DrainSignal {
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Starts draining and wakes every waiter.
    pub fn start(&self) {
        self.draining.set(true);
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
        DrainWait {
            signal: self,
            slot: None,
        }
    }
}

/// A wait for the drain to start; gives its slot back when dropped.
pub struct DrainWait<'a> {
    signal: &'a DrainSignal,
    slot: Option<usize>,
}

impl Future for DrainWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let signal = self.signal;
        if signal.draining.get() {
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
        waiters[slot] = Some(cx.waker().clone());
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
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(second.as_mut().poll(&mut cx).is_ready());
        assert!(signal.is_draining());
    }
}
