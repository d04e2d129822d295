//! Bench: the runtime comparison's HTTP/1.1 keep-alive server and timer microbench on compio,
//! its io_uring set up as rt's ring (SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG, same queue
//! sizes): accept, recv and send are completion operations submitted to the ring.
use std::{cell::Cell, io, rc::Rc};

use compio::{
    driver::ProactorBuilder,
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::{Runtime, RuntimeBuilder},
    time, BufResult,
};
use runtime_compare::{
    exit_on_error, parse, period, response, run_threads, Mode, Parsed, Sample, TimerBench,
    BAD_REQUEST, BUFFER_BYTES, TIMEOUT,
};
use socket2::Socket;

/// Submission and completion queue entries: rt's ring (rt/src/ring.rs) has the same.
const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 4096;

fn main() {
    exit_on_error((|| {
        match Mode::from_args()? {
            Mode::Serve(options) => run_threads(&options, serve),
            Mode::Timers(bench) => timers(bench),
        }
        .map_err(|e| e.to_string())
    })());
}

/// This thread's runtime, its ring set up as rt's.
fn runtime() -> io::Result<Runtime> {
    let mut proactor = ProactorBuilder::new();
    proactor
        .capacity(SQ_ENTRIES)
        .cqsize(CQ_ENTRIES)
        .single_issuer(true)
        .defer_taskrun(true)
        .taskrun_flag(true);
    RuntimeBuilder::new().with_proactor(proactor).build()
}

/// The timer microbench (`TimerBench`) on this thread.
fn timers(bench: TimerBench) -> io::Result<()> {
    runtime()?.block_on(async move {
        let wakeups = Rc::new(Cell::new(0));
        for task in 0..bench.tasks {
            let wakeups = wakeups.clone();
            compio::runtime::spawn(async move {
                loop {
                    let _ = time::timeout(TIMEOUT, time::sleep(period(task))).await;
                    wakeups.set(wakeups.get() + 1);
                }
            })
            .detach();
        }
        time::sleep(bench.warmup).await;
        let start = Sample::now(wakeups.get());
        time::sleep(bench.window).await;
        Sample::now(wakeups.get()).report_since(&start);
    });
    Ok(())
}

/// One thread: its runtime accepts on its own listening socket.
fn serve(socket: Socket) -> io::Result<()> {
    runtime()?.block_on(async move {
        let listener = TcpListener::from_std(socket.into())?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => compio::runtime::spawn(connection(stream)).detach(),
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {} // client gave up
                Err(e) => return Err(e),
            }
        }
    })
}

/// Answers requests until the client closes, asks to close, or sends something unparsable.
async fn connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    // Owned, as completion I/O needs: the ring writes into it while the task waits.
    let mut buf = Vec::with_capacity(BUFFER_BYTES);
    loop {
        match parse(&buf) {
            Parsed::Request { len, close } => {
                let BufResult(written, _) = stream.write_all(response(close)).await;
                if written.is_err() || close {
                    return;
                }
                buf.drain(..len);
            }
            Parsed::Partial => {
                let BufResult(read, returned) = stream.append(buf).await;
                buf = returned;
                match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            Parsed::Bad => {
                let _ = stream.write_all(BAD_REQUEST).await;
                return;
            }
        }
    }
}
