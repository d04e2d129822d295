//! HTTP/2 `connection_keepalive`: a PING every interval (with jitter); a peer that leaves one
//! unanswered past the timeout is taken for dead. Both directions use it: the connection
//! manager on its clients, the upstream pool on its hosts.
use std::{
    future::{pending, poll_fn},
    time::{Duration, Instant},
};

use h2::{Ping, PingPong};
use model::http::Keepalive;

use crate::rt::timer;

/// Completes when a PING went unanswered for `keepalive.timeout`; pending forever when there
/// is no keepalive, and once the connection is gone (its own end is reported elsewhere).
pub async fn peer_unresponsive(ping_pong: Option<PingPong>, keepalive: Option<Keepalive>) {
    let (Some(mut ping_pong), Some(keepalive)) = (ping_pong, keepalive) else {
        return pending().await;
    };
    loop {
        timer::sleep(next_interval(&keepalive)).await;
        if ping_pong.send_ping(Ping::opaque()).is_err() {
            return pending().await;
        }
        let pong = poll_fn(|cx| ping_pong.poll_pong(cx));
        match timer::within(Some(Instant::now() + keepalive.timeout), pong).await {
            Some(Ok(_)) => {}
            Some(Err(_)) => return pending().await,
            None => return,
        }
    }
}

/// The interval and a random part of its jitter (Envoy adds between 0 and jitter × interval).
fn next_interval(keepalive: &Keepalive) -> Duration {
    let jitter = keepalive.jitter_ppm as f64 / 1_000_000.0;
    keepalive.interval.mul_f64(1.0 + jitter * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_stay_within_the_jitter() {
        let keepalive = Keepalive {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            jitter_ppm: 150_000,
        };
        for _ in 0..1000 {
            let next = next_interval(&keepalive);
            assert!(next >= Duration::from_secs(10) && next <= Duration::from_millis(11_500));
        }
        let exact = Keepalive {
            jitter_ppm: 0,
            ..keepalive
        };
        assert_eq!(next_interval(&exact), Duration::from_secs(10));
    }
}
