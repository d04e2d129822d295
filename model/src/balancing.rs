//! Domain model: cluster load-balancing settings beyond the policy — slow start
//! (`slow_start_config`) and when a host's slow-start window opens, zone-aware routing
//! (`zone_aware_lb_config`, the local cluster and locality) and locality names.
use std::time::{Duration, Instant};

/// `round_robin_lb_config.slow_start_config` / `least_request_lb_config.slow_start_config`: a
/// host that just became healthy takes a growing share of its weight over `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// `slow_start_window` (positive).
    pub window: Duration,
    /// `aggression.default_value` (1.0 without one): how fast the share grows, as
    /// `time_factor^(1/aggression)`. Envoy uses 1.0 in place of a value not above 0 (or NaN).
    pub aggression: f64,
    /// `min_weight_percent` as a fraction (default 0.1): the least share of its weight a host
    /// in slow start takes.
    pub min_weight: f64,
}

impl SlowStart {
    /// The share of its weight a host takes `age` after its window opened: Envoy's
    /// `max(min_weight, time_factor^(1/aggression))` with `time_factor = max(1 ms, age) /
    /// window` in whole milliseconds; `None` once the window is over (the full weight).
    pub fn factor(&self, age: Duration) -> Option<f64> {
        let window = self.window.as_millis() as f64;
        let age = (age.as_millis() as f64).max(1.0);
        if age >= window {
            return None;
        }
        let time_factor = age / window;
        let aggression = match self.aggression {
            a if a > 0.0 => a,
            _ => 1.0, // also NaN
        };
        let grown = match aggression {
            1.0 => time_factor,
            a => time_factor.powf(1.0 / a),
        };
        Some(grown.max(self.min_weight))
    }
}

/// When the agent first published an endpoint: where its slow-start window opens, unless an
/// active health check brought it back to health later (the same instant on every shard).
/// Not part of the endpoint's identity: endpoints that differ only in it are the same host,
/// and shards keep the host (with its first instant) across updates.
#[derive(Debug, Clone, Copy)]
pub struct FirstPublished(pub Instant);

impl FirstPublished {
    pub fn now() -> Self {
        Self(Instant::now())
    }
}

impl PartialEq for FirstPublished {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for FirstPublished {}

/// A locality's `region`, `zone` and `sub_zone`, ordered as Envoy orders localities.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalityName {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

/// The locality of endpoints that name none.
pub static NO_LOCALITY: LocalityName = LocalityName {
    region: String::new(),
    zone: String::new(),
    sub_zone: String::new(),
};

/// `cluster_manager.local_cluster_name` with the bootstrap's `node.locality`: every
/// ROUND_ROBIN, LEAST_REQUEST and RANDOM cluster routes zone-aware against the local
/// cluster's spread over localities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalZone {
    pub cluster: String,
    pub locality: LocalityName,
}

/// `common_lb_config.zone_aware_lb_config`, with Envoy's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneAware {
    /// `routing_enabled` rounded to a whole percent (default 100): the share of picks routed
    /// by zone.
    pub routing_enabled: u32,
    /// `min_cluster_size` (default 6): fewer healthy hosts in priority 0 turn routing off.
    pub min_cluster_size: u64,
    /// `fail_traffic_on_panic`: no host instead of every host while in panic.
    pub fail_traffic_on_panic: bool,
}

impl Default for ZoneAware {
    fn default() -> Self {
        Self {
            routing_enabled: 100,
            min_cluster_size: 6,
            fail_traffic_on_panic: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow(aggression: f64) -> SlowStart {
        SlowStart {
            window: Duration::from_secs(10),
            aggression,
            min_weight: 0.1,
        }
    }

    #[test]
    fn the_share_grows_with_time_from_the_minimum_to_the_full_weight() {
        let ms = Duration::from_millis;
        assert_eq!(slow(1.0).factor(ms(0)), Some(0.1));
        assert_eq!(slow(1.0).factor(ms(5_000)), Some(0.5));
        assert_eq!(slow(1.0).factor(ms(10_000)), None);
        // Aggression 2: the square root of the time factor.
        assert_eq!(slow(2.0).factor(ms(2_500)), Some(0.5));
        // A value Envoy refuses at pick time counts as 1.
        assert_eq!(slow(0.0).factor(ms(5_000)), Some(0.5));
        assert_eq!(slow(f64::NAN).factor(ms(5_000)), Some(0.5));
        assert_eq!(slow(-1.0).factor(ms(500)), Some(0.1));
    }
}
