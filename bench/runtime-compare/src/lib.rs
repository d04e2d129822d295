//! Bench: what both runtime-comparison binaries share, so they differ only in the runtime —
//! the command line, one pinned thread per core with its own SO_REUSEPORT listener, the
//! per-connection buffer, the request parser and the fixed response; and the timer
//! microbench's periods and report.
use std::{
    io,
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

/// Bytes a connection reads into; a request head that does not fit is refused.
pub const BUFFER_BYTES: usize = 4096;
/// Pending connections per listening socket (shardproxy's listeners use the same).
const BACKLOG: i32 = 1024;

/// The fixed answer: a 12-byte body, as bench.py's upstream serves `/small`.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello world\n";
/// The same, ending the connection (the client asked for `Connection: close`).
const RESPONSE_CLOSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello world\n";
/// The answer to a request, `close` when the client asked to end the connection.
pub fn response(close: bool) -> &'static [u8] {
    if close {
        RESPONSE_CLOSE
    } else {
        RESPONSE
    }
}

/// The answer to a request that does not parse or does not fit the buffer.
pub const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// What the buffered bytes hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request head of `len` bytes; `close` when it asked for `Connection: close`.
    Request { len: usize, close: bool },
    /// Not a whole head yet: read more.
    Partial,
    /// Not HTTP/1.1, or a head longer than the buffer.
    Bad,
}

/// Parses the request head at the start of `buf` (httparse, as shardproxy's codec).
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let close = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
            });
            Parsed::Request { len, close }
        }
        Ok(httparse::Status::Partial) if buf.len() < BUFFER_BYTES => Parsed::Partial,
        _ => Parsed::Bad,
    }
}

/// What a binary runs, from its command line.
pub enum Mode {
    /// `--port P [--threads N]`: the HTTP server on 127.0.0.1:P, N threads (default: one per
    /// core this process may run on).
    Serve(Options),
    /// `--timers N [--warmup S] [--seconds S]`: the timer microbench on this thread.
    Timers(TimerBench),
}

pub struct Options {
    pub port: u16,
    pub threads: usize,
}

impl Mode {
    pub fn from_args() -> Result<Self, String> {
        Self::parse(std::env::args().skip(1))
    }

    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        const USAGE: &str = "--port P [--threads N] | --timers N [--warmup S] [--seconds S]";
        let mut flags = std::collections::HashMap::new();
        while let Some(flag) = args.next() {
            if !["--port", "--threads", "--timers", "--warmup", "--seconds"].contains(&&*flag) {
                return Err(format!("unknown argument {flag} ({USAGE})"));
            }
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            flags.insert(flag, value);
        }
        fn get<T: std::str::FromStr>(
            flags: &std::collections::HashMap<String, String>,
            flag: &str,
        ) -> Result<Option<T>, String> {
            flags
                .get(flag)
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("{flag} {v}: not a valid value"))
                })
                .transpose()
        }
        let seconds = |flag, default| -> Result<Duration, String> {
            let s: f64 = get(&flags, flag)?.unwrap_or(default);
            Duration::try_from_secs_f64(s).map_err(|e| format!("{flag} {s}: {e}"))
        };
        let at_least_one = |flag, n: Option<usize>| match n {
            Some(0) => Err(format!("{flag} must be at least 1")),
            n => Ok(n),
        };
        if let Some(tasks) = at_least_one("--timers", get(&flags, "--timers")?)? {
            return Ok(Mode::Timers(TimerBench {
                tasks,
                warmup: seconds("--warmup", 1.0)?,
                window: seconds("--seconds", 5.0)?,
            }));
        }
        Ok(Mode::Serve(Options {
            port: get(&flags, "--port")?
                .ok_or(format!("--port or --timers is required ({USAGE})"))?,
            threads: at_least_one("--threads", get(&flags, "--threads")?)?
                .unwrap_or_else(|| cores().len().max(1)),
        }))
    }
}

/// The timer microbench: `tasks` tasks, each sleeping its own short period (`period`) over
/// and over inside a long timeout (`TIMEOUT`) — per wake-up one timer fires and one is armed
/// and cancelled, as a proxy's request does with its timeout. Counted over `window` after
/// `warmup`.
pub struct TimerBench {
    pub tasks: usize,
    pub warmup: Duration,
    pub window: Duration,
}

/// The timeout each sleep runs inside; never reached.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Task `task`'s sleep: 0.5–1.5 ms, spread so that the tasks' deadlines do not coincide.
pub fn period(task: usize) -> Duration {
    Duration::from_micros(500 + (task as u64 * 37) % 1000)
}

/// Wake-ups counted so far, with this process's CPU time (all threads) and the time.
pub struct Sample {
    wakeups: u64,
    cpu: Duration,
    at: Instant,
}

impl Sample {
    pub fn now(wakeups: u64) -> Self {
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .expect("getrusage(RUSAGE_SELF) cannot fail");
        let time = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        Self {
            wakeups,
            cpu: time(usage.user_time()) + time(usage.system_time()),
            at: Instant::now(),
        }
    }

    /// Prints the window from `start` to `self` as the line runtime_compare.py reads.
    pub fn report_since(&self, start: &Sample) {
        println!(
            "BENCHJSON {{\"wakeups\":{},\"cpu_s\":{:.6},\"duration_s\":{:.6}}}",
            self.wakeups - start.wakeups,
            (self.cpu - start.cpu).as_secs_f64(),
            (self.at - start.at).as_secs_f64()
        );
    }
}

fn cores() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

/// Runs `serve` on `threads` threads, thread i pinned to the i-th core of this process's
/// affinity mask (modulo their number) as shardproxy pins its shards, each given its own
/// 127.0.0.1:`port` listening socket (SO_REUSEPORT: the kernel spreads connections over
/// them). Returns when every thread returned.
pub fn run_threads(options: &Options, serve: fn(Socket) -> io::Result<()>) -> io::Result<()> {
    let cores = cores();
    let address = SocketAddr::from(([127, 0, 0, 1], options.port));
    let threads = (0..options.threads)
        .map(|i| {
            let socket = listen(address)?;
            let core = cores.get(i % cores.len().max(1)).copied();
            thread::Builder::new()
                .name(format!("server-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    serve(socket)
                })
        })
        .collect::<io::Result<Vec<_>>>()?;
    for thread in threads {
        thread
            .join()
            .map_err(|_| io::Error::other("a server thread panicked"))??;
    }
    Ok(())
}

/// A bound, listening socket of the SO_REUSEPORT group on `address` (blocking mode: each
/// runtime sets the mode it needs).
fn listen(address: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Prints the error and exits non-zero, for the binaries' `main`.
pub fn exit_on_error(result: Result<(), String>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(args: &str) -> Result<Mode, String> {
        Mode::parse(args.split_whitespace().map(String::from))
    }

    #[test]
    fn command_lines() {
        let Ok(Mode::Serve(o)) = mode("--port 8080 --threads 2") else {
            panic!("serve mode")
        };
        assert_eq!((o.port, o.threads), (8080, 2));
        let Ok(Mode::Timers(t)) = mode("--timers 10 --seconds 0.5") else {
            panic!("timers mode")
        };
        assert_eq!(
            (t.tasks, t.window, t.warmup),
            (10, Duration::from_millis(500), Duration::from_secs(1))
        );
        for bad in [
            "",
            "--port 70000",
            "--port 1 --threads 0",
            "--timers 0",
            "--seconds -1 --timers 1",
            "--port",
            "--bogus 1",
        ] {
            assert!(mode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_whole_heads_and_connection_close() {
        let keep = b"GET /small HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse(keep),
            Parsed::Request {
                len: keep.len(),
                close: false
            }
        );
        let close = b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\nGET";
        assert_eq!(
            parse(close),
            Parsed::Request {
                len: close.len() - 3,
                close: true
            }
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost"), Parsed::Partial);
        assert_eq!(parse(b"\x00\x01 nonsense\r\n\r\n"), Parsed::Bad);
        assert_eq!(parse(&[b'a'; BUFFER_BYTES]), Parsed::Bad);
    }
}
