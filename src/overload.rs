//! The overload manager on a shard: the action states the agent last sent (read per request
//! and per accept, without a lock or an atomic), and the waits of accept loops that
//! `stop_accepting_connections` pauses.
use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    task::{Poll, Waker},
};

use model::overload::{ActionKind, ActionStates};

#[derive(Default)]
pub struct ShardOverload {
    states: Cell<ActionStates>,
    /// Accept loops waiting for `stop_accepting_connections` to change (one waker per task).
    waiters: RefCell<Vec<Waker>>,
}

impl ShardOverload {
    /// New states from the agent; wakes the accept loops.
    pub fn set(&self, states: ActionStates) {
        self.states.set(states);
        let woken = std::mem::take(&mut *self.waiters.borrow_mut());
        woken.into_iter().for_each(Waker::wake);
    }

    /// Whether `action` applies to one more request or connection (drawn at random when the
    /// action is scaled, as Envoy's bernoulli draw).
    pub fn applies(&self, action: ActionKind) -> bool {
        self.states.get().applies(action, fastrand::f64)
    }

    fn accepting(&self) -> bool {
        !self
            .states
            .get()
            .is_saturated(ActionKind::StopAcceptingConnections)
    }

    /// Completes once listeners may accept (`stop_accepting_connections` not saturated).
    pub async fn until_accepting(&self) {
        self.until(|o| o.accepting()).await
    }

    /// Completes once listeners must stop accepting.
    pub async fn until_stopped(&self) {
        self.until(|o| !o.accepting()).await
    }

    async fn until(&self, done: impl Fn(&Self) -> bool) {
        poll_fn(|cx| {
            if done(self) {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, pin::pin, task::Context};

    use model::overload::{OverloadConfig, Trigger, TriggerKind};

    use super::*;

    /// States with `stop_accepting_connections` saturated (through a real trigger).
    fn stopped() -> ActionStates {
        let mut registry = model::stats::StatsRegistry::new(1);
        let config = OverloadConfig {
            refresh_interval: std::time::Duration::from_secs(1),
            monitors: Vec::new(),
            actions: vec![model::overload::Action {
                kind: ActionKind::StopAcceptingConnections,
                triggers: vec![Trigger {
                    monitor: 0,
                    kind: TriggerKind::Threshold { value: 0.5 },
                }],
                stats: registry.overload_action(ActionKind::StopAcceptingConnections),
            }],
        };
        config.states(&[Some(0.9)])
    }

    #[test]
    fn paused_accept_loops_wait_for_the_states_to_change_and_register_once() {
        // A waker whose clones are the same waker (`will_wake`), as the runtime's are:
        // `Waker::noop()`'s clones need not compare equal.
        struct Task;
        impl std::task::Wake for Task {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        let waker = Waker::from(std::sync::Arc::new(Task));
        let overload = ShardOverload::default();
        let mut cx = Context::from_waker(&waker);
        assert!(pin!(overload.until_accepting()).poll(&mut cx).is_ready());
        overload.set(stopped());
        let mut accepting = pin!(overload.until_accepting());
        assert!(accepting.as_mut().poll(&mut cx).is_pending());
        assert!(accepting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(overload.waiters.borrow().len(), 1, "one waker per task");
        assert!(pin!(overload.until_stopped()).poll(&mut cx).is_ready());
        overload.set(ActionStates::default());
        assert!(overload.waiters.borrow().is_empty(), "woken");
        assert!(accepting.as_mut().poll(&mut cx).is_ready());
        assert!(!overload.applies(ActionKind::StopAcceptingRequests));
    }
}
