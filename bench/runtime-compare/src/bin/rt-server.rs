//! Bench: the runtime comparison's HTTP/1.1 keep-alive server and timer microbench on
//! shardproxy's shard runtime (`rt`): readiness from io_uring (or epoll with
//! `RT_BACKEND=epoll`), then plain recv/send.
use std::{cell::Cell, io, rc::Rc, time::Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rt::{
    executor::Executor,
    net::{TcpListener, TcpStream},
    poller::{self, Backend},
    spawn_local, timer,
};
use runtime_compare::{
    exit_on_error, parse, period, response, run_threads, Mode, Parsed, Sample, TimerBench,
    BAD_REQUEST, BUFFER_BYTES, TIMEOUT,
};
use socket2::Socket;

fn main() {
    exit_on_error((|| {
        let mode = Mode::from_args()?;
        let requested = match std::env::var("RT_BACKEND").as_deref() {
            Ok("epoll") => Some(Backend::Epoll),
            Ok("io_uring") => Some(Backend::IoUring),
            Ok(other) => return Err(format!("RT_BACKEND={other}: io_uring or epoll")),
            Err(_) => None,
        };
        poller::choose(requested).map_err(|e| e.to_string())?;
        match mode {
            Mode::Serve(options) => run_threads(&options, serve),
            Mode::Timers(bench) => timers(bench),
        }
        .map_err(|e| e.to_string())
    })());
}

/// The timer microbench (`TimerBench`) on this thread.
fn timers(bench: TimerBench) -> io::Result<()> {
    let executor = Executor::new()?;
    executor.run(async move {
        let wakeups = Rc::new(Cell::new(0));
        for task in 0..bench.tasks {
            let wakeups = wakeups.clone();
            spawn_local(async move {
                loop {
                    let deadline = Some(Instant::now() + TIMEOUT);
                    timer::within(deadline, timer::sleep(period(task))).await;
                    wakeups.set(wakeups.get() + 1);
                }
            })
            .detach();
        }
        timer::sleep(bench.warmup).await;
        let start = Sample::now(wakeups.get());
        timer::sleep(bench.window).await;
        Sample::now(wakeups.get()).report_since(&start);
    });
    Ok(())
}

/// One thread: its executor accepts on its own listening socket.
fn serve(socket: Socket) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    let executor = Executor::new()?;
    executor.run(async move {
        let mut listener = TcpListener::adopt(socket);
        loop {
            match listener.accept().await {
                Ok(stream) => spawn_local(connection(stream)).detach(),
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {} // client gave up
                Err(e) => return Err(e),
            }
        }
    })
}

/// Answers requests until the client closes, asks to close, or sends something unparsable.
async fn connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0; BUFFER_BYTES];
    let mut filled = 0;
    loop {
        match parse(&buf[..filled]) {
            Parsed::Request { len, close } => {
                if stream.write_all(response(close)).await.is_err() || close {
                    return;
                }
                buf.copy_within(len..filled, 0);
                filled -= len;
            }
            Parsed::Partial => match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => filled += n,
            },
            Parsed::Bad => {
                let _ = stream.write_all(BAD_REQUEST).await;
                return;
            }
        }
    }
}
