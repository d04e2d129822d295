//! Runtime unit tests: executor, timers and socket readiness on real 127.0.0.1 sockets, each
//! on both backends (io_uring and epoll).
use std::{
    cell::{Cell, RefCell},
    io::{Read, Write},
    net::{Shutdown, SocketAddr},
    rc::Rc,
    time::{Duration, Instant},
};

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use socket2::{Domain, Socket, Type};

use super::{
    executor::{self, Executor},
    net::{TcpListener, TcpStream},
    poller::Backend,
    spawn_local, timer, wake,
};

fn listen() -> (TcpListener, SocketAddr) {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(16).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (TcpListener::adopt(socket), addr)
}

/// Operation slots still held (0 once every poll was reaped or cancelled).
fn live_ops() -> usize {
    executor::with(|rt| rt.ops.borrow().live()).unwrap()
}

/// Lets the loop turn (submit, reap) a few times.
async fn settle() {
    timer::sleep(Duration::from_millis(20)).await;
}

struct SetOnDrop(Rc<Cell<bool>>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

fn tasks_run_in_order_and_dropping_a_task_cancels_it(backend: Backend) {
    let ex = Executor::on(backend).unwrap();
    let out = ex.run(async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let (a, b) = (order.clone(), order.clone());
        spawn_local(async move { a.borrow_mut().push(1) }).detach();
        let second = spawn_local(async move {
            b.borrow_mut().push(2);
            7
        });
        let dropped = Rc::new(Cell::new(false));
        let guard = SetOnDrop(dropped.clone());
        let cancelled = spawn_local(async move {
            let _guard = guard;
            future::pending::<()>().await
        });
        let value = second.await;
        drop(cancelled);
        settle().await;
        assert!(dropped.get(), "dropping a Task drops its future");
        let order = order.borrow().clone();
        (order, value)
    });
    assert_eq!(out, (vec![1, 2], 7));
}

fn timers_fire_in_deadline_order_and_not_early(backend: Backend) {
    let ex = Executor::on(backend).unwrap();
    let order = ex.run(async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let start = Instant::now();
        let tasks: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                let order = order.clone();
                spawn_local(async move {
                    timer::sleep(Duration::from_millis(ms)).await;
                    assert!(start.elapsed() >= Duration::from_millis(ms));
                    order.borrow_mut().push(ms);
                })
            })
            .collect();
        // A dropped sleep leaves nothing behind.
        future::or(timer::sleep(Duration::from_secs(60)), async {}).await;
        for task in tasks {
            task.await;
        }
        assert!(executor::with(|rt| rt.timers.borrow().next_deadline())
            .unwrap()
            .is_none());
        let order = order.borrow().clone();
        order
    });
    assert_eq!(order, vec![10, 20, 30]);
}

/// Stress: 5,000 timers with spread deadlines, a quarter of them cancelled, while another
/// thread wakes the shard 2,000 times. Every timer that stays fires once, never early; the
/// timer map ends empty; every wake-up is seen (coalesced ones count once).
fn timers_and_wake_ups_under_load(backend: Backend) {
    let (waker, receiver) = wake::pair().unwrap();
    let ex = Executor::on(backend).unwrap();
    let (fired, woken) = ex.run(async move {
        let fired = Rc::new(Cell::new(0u32));
        let start = Instant::now();
        let mut kept = Vec::new();
        for i in 0..5_000u64 {
            let due = Duration::from_micros((i * 7_919) % 50_000);
            let fired = fired.clone();
            let task = spawn_local(async move {
                timer::sleep(due).await;
                assert!(start.elapsed() >= due, "a timer fired early");
                fired.set(fired.get() + 1);
            });
            // Every fourth timer is cancelled before it is due.
            match i % 4 {
                0 => drop(task),
                _ => kept.push(task),
            }
        }
        let agent = std::thread::spawn(move || {
            for _ in 0..2_000 {
                waker.wake();
                std::thread::yield_now();
            }
        });
        let mut wake = receiver.attach();
        let mut woken = 0u32;
        while wake.wait().await.is_ok() {
            woken += 1;
        }
        agent.join().unwrap();
        for task in kept {
            task.await;
        }
        let left = executor::with(|rt| rt.timers.borrow().next_deadline()).unwrap();
        assert!(left.is_none(), "no timer left behind");
        (fired.get(), woken)
    });
    assert_eq!(fired, 3_750);
    assert!((1..=2_000).contains(&woken), "{woken} wake-ups seen");
}

fn echo_with_short_reads_and_late_data(backend: Backend) {
    let ex = Executor::on(backend).unwrap();
    ex.run(async {
        let (mut listener, addr) = listen();
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"hello").unwrap();
            std::thread::sleep(Duration::from_millis(50)); // the shard's read drained: waits
            s.write_all(b" world").unwrap();
            let mut back = [0u8; 11];
            s.read_exact(&mut back).unwrap();
            back
        });
        let mut stream = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        assert_eq!(stream.local_addr().unwrap(), addr);
        assert!(stream.peer_addr().unwrap().ip().is_loopback());
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 11 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello world");
        stream.write_all(&got).await.unwrap();
        assert_eq!(&peer.join().unwrap(), b"hello world");
    });
}

fn short_read_before_a_queued_fin_still_sees_eof(backend: Backend) {
    let ex = Executor::on(backend).unwrap();
    ex.run(async {
        let (mut listener, addr) = listen();
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        let mut stream = listener.accept().await.unwrap();
        let reader = spawn_local(async move {
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            loop {
                match stream.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        future::yield_now().await; // the reader saw EAGAIN and armed its poll
                                   // Data and FIN both arrive before the ring reports anything: one event for both.
        peer.write_all(b"last words").unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        let expired = async {
            timer::sleep(Duration::from_secs(5)).await;
            None
        };
        let got = future::or(async { Some(reader.await) }, expired).await;
        assert_eq!(
            got.as_deref(),
            Some(&b"last words"[..]),
            "EOF after a short read"
        );
    });
}

fn writes_wait_for_a_slow_reader_and_lose_nothing(backend: Backend) {
    let ex = Executor::on(backend).unwrap();
    ex.run(async {
        let (mut listener, addr) = listen();
        const LEN: usize = 8 << 20;
        let peer = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            std::thread::sleep(Duration::from_millis(100)); // let the send buffer fill
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all
        });
        let mut stream = listener.accept().await.unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        stream.write_all(&data).await.unwrap();
        stream.close().await.unwrap(); // FIN
        let got = peer.join().unwrap();
        assert!(got == data, "all {LEN} bytes, in order");
    });
}

fn connect_reports_refusal_and_timeout(backend: Backend) {
    let ex = Executor::on(backend).unwrap();
    ex.run(async {
        let (listener, addr) = listen();
        let err = TcpStream::connect_timeout(addr, Duration::ZERO)
            .await
            .err()
            .expect("a zero timeout expires first");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(listener);
        settle().await;
        let err = TcpStream::connect_timeout(addr, Duration::from_secs(5))
            .await
            .err()
            .expect("nothing listens any more");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        let (mut listener, addr) = listen();
        let (accepted, connected) = future::zip(
            listener.accept(),
            TcpStream::connect_timeout(addr, Duration::from_secs(5)),
        )
        .await;
        assert_eq!(
            accepted.unwrap().peer_addr().unwrap(),
            connected.unwrap().local_addr().unwrap()
        );
    });
}

fn dropping_a_waiting_socket_cancels_its_poll_before_the_fd_is_reused(backend: Backend) {
    let ex = Executor::on(backend).unwrap();
    ex.run(async {
        let (mut listener, addr) = listen();
        let _peers: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut first = listener.accept().await.unwrap();
        let mut buf = [0u8; 16];
        // Arms the multishot poll, then drops the socket while it waits.
        let timed_out = future::or(async { first.read(&mut buf).await.is_err() }, async {
            settle().await;
            true
        })
        .await;
        assert!(timed_out);
        drop(first);
        let mut second = listener.accept().await.unwrap(); // likely the same fd number
        let mut peer = std::net::TcpStream::connect(addr).unwrap();
        let mut third = listener.accept().await.unwrap();
        peer.write_all(b"x").unwrap();
        assert_eq!(third.read(&mut buf).await.unwrap(), 1);
        settle().await;
        let waiting = future::or(async { second.read(&mut buf).await.map(Some) }, async {
            settle().await;
            Ok(None)
        });
        assert!(waiting.await.unwrap().is_none(), "no stray readiness");
        drop((second, third, listener));
        settle().await;
        assert_eq!(live_ops(), 0, "every poll reaped or cancelled");
    });
}

fn agent_wake_ups_reach_a_parked_shard(backend: Backend) {
    let (waker, receiver) = wake::pair().unwrap();
    let ex = Executor::on(backend).unwrap();
    ex.run(async move {
        let mut wake = receiver.attach();
        let agent = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake();
            waker.wake();
            std::thread::sleep(Duration::from_millis(50));
            drop(waker);
        });
        let start = Instant::now();
        wake.wait().await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40));
        // The second wake-up is coalesced with the first unless the shard read in between;
        // either way the agent going away ends the waiting.
        let mut extra = 0;
        while wake.wait().await.is_ok() {
            extra += 1;
            assert!(extra <= 1, "more wake-ups than the agent sent");
        }
        agent.join().unwrap();
    });
}

/// Every test above, on each backend.
macro_rules! on_each_backend {
    ($($test:ident),* $(,)?) => {
        mod io_uring {
            $(#[test] fn $test() { super::$test(super::Backend::IoUring) })*
        }
        mod epoll {
            $(#[test] fn $test() { super::$test(super::Backend::Epoll) })*
        }
    };
}

on_each_backend!(
    tasks_run_in_order_and_dropping_a_task_cancels_it,
    timers_fire_in_deadline_order_and_not_early,
    timers_and_wake_ups_under_load,
    echo_with_short_reads_and_late_data,
    short_read_before_a_queued_fin_still_sees_eof,
    writes_wait_for_a_slow_reader_and_lose_nothing,
    connect_reports_refusal_and_timeout,
    dropping_a_waiting_socket_cancels_its_poll_before_the_fd_is_reused,
    agent_wake_ups_reach_a_parked_shard,
);
