//! Runtime: the state of each in-flight io_uring operation (has it completed, is more to
//! come, who waits), keyed by the `user_data` its completions carry.
use std::task::{Context, Poll, Waker};

/// `user_data` of operations whose completions nobody waits for (cancellations).
pub const IGNORED: u64 = u64::MAX;

#[derive(Default)]
struct Op {
    /// A completion arrived since the owner last looked.
    fired: bool,
    /// Poll events (`POLL*` bits) reported since the owner last looked; errors as `POLLERR`.
    events: u32,
    /// The final completion arrived (no `IORING_CQE_F_MORE`): the kernel is done with it.
    ended: bool,
    /// The owner is gone; the slot is freed when the final completion arrives.
    orphan: bool,
    waker: Option<Waker>,
}

struct Entry {
    /// Bumped on every reuse, so a stale `user_data` never matches a newer operation.
    generation: u32,
    op: Option<Op>,
}

/// A slot is freed only after the kernel's final completion for it, so no completion can
/// refer to a freed or reused slot.
#[derive(Default)]
pub struct Ops {
    entries: Vec<Entry>,
    free: Vec<u32>,
}

fn split(user_data: u64) -> (usize, u32) {
    ((user_data & 0xffff_ffff) as usize, (user_data >> 32) as u32)
}

impl Ops {
    /// Slots in use.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// A new operation slot; returns the `user_data` to submit it with.
    pub fn insert(&mut self) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index as usize,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    op: None,
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        entry.generation = entry.generation.wrapping_add(1);
        entry.op = Some(Op::default());
        (u64::from(entry.generation) << 32) | index as u64
    }

    fn get(&mut self, user_data: u64) -> Option<&mut Op> {
        let (index, generation) = split(user_data);
        self.entries
            .get_mut(index)
            .filter(|e| e.generation == generation)
            .and_then(|e| e.op.as_mut())
    }

    fn remove(&mut self, user_data: u64) -> Option<Waker> {
        let (index, _) = split(user_data);
        let op = self.entries[index].op.take();
        self.free.push(index as u32);
        op.and_then(|op| op.waker)
    }

    /// Records a completion; returns the waiter to wake (outside any borrow of `self`).
    pub fn complete(&mut self, user_data: u64, result: i32, more: bool) -> Option<Waker> {
        let op = self.get(user_data)?;
        op.fired = true;
        op.events |= u32::try_from(result).unwrap_or(libc::POLLERR as u32);
        op.ended |= !more;
        if op.orphan && op.ended {
            return self.remove(user_data);
        }
        op.waker.take()
    }

    /// `Ready((events, ended))` once a completion arrived since the last call (an ended
    /// operation's slot is freed); otherwise registers `cx`'s waker.
    pub fn poll(&mut self, user_data: u64, cx: &mut Context<'_>) -> Poll<(u32, bool)> {
        let op = self.get(user_data).expect("polled a live operation");
        if !op.fired {
            if !op.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                op.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        op.fired = false;
        let events = std::mem::take(&mut op.events);
        let ended = op.ended;
        if ended {
            // The waker (if any) belongs to the task polling now, so this drop is not its last.
            drop(self.remove(user_data));
        }
        Poll::Ready((events, ended))
    }

    /// The owner gives the operation up. Returns whether it is still in flight (the caller
    /// submits a cancellation) and the waker to drop outside any borrow of `self`.
    pub fn abandon(&mut self, user_data: u64) -> (bool, Option<Waker>) {
        let Some(op) = self.get(user_data) else {
            return (false, None);
        };
        if op.ended {
            return (false, self.remove(user_data));
        }
        op.orphan = true;
        (true, op.waker.take())
    }
}
