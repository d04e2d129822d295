//! Stats: the filters' scopes with Envoy's names (`http.<prefix>.fault.*`,
//! `http.<prefix>.cors.*`, `<stat_prefix>.http_local_rate_limit.*`, the HTTP and network
//! `rbac` filters' `<prefix>rbac[.<rules prefix>].allowed`, the `ext_authz` filters'
//! `<prefix>ext_authz.ok`, `connection_limit.<prefix>.limited_connections`, ...).
use std::sync::atomic::Ordering::Relaxed;

use crate::stats::stat_scope;

stat_scope!(
    FaultStats,
    FaultCells {
        delays_injected: Counter,
        aborts_injected: Counter,
        faults_overflow: Counter,
        active_faults: Gauge,
    }
);

impl FaultStats {
    /// Faults active in the whole process: the sum of the shards' gauges, read only when a
    /// fault is about to be injected under `max_active_faults` (a read of other shards' cells,
    /// never a write; a fuzzy limit, as Envoy's).
    pub fn active_faults(&self) -> u64 {
        self.shards.iter().fold(0u64, |sum, s| {
            sum.wrapping_add(s.0.active_faults.load(Relaxed))
        })
    }
}

stat_scope!(
    CorsStats,
    CorsCells {
        origin_valid: Counter,
        origin_invalid: Counter,
    }
);

stat_scope!(
    LocalRateLimitStats,
    LocalRateLimitCells {
        enabled: Counter,
        enforced: Counter,
        rate_limited: Counter,
        ok: Counter,
        // Envoy 1.40: requests over a `shadow_mode` descriptor's limit, let through. Always 0
        // here (descriptors are rejected), listed because Envoy lists it.
        shadow_mode: Counter,
    }
);

impl LocalRateLimitStats {
    /// How many shards the process runs (one cell set each): the token bucket leases per shard.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

stat_scope!(
    RbacStats,
    RbacCells {
        allowed: Counter,
        denied: Counter,
    }
);

stat_scope!(
    ExtAuthzStats,
    ExtAuthzCells {
        ok: Counter,
        denied: Counter,
        error: Counter,
        disabled: Counter,
        failure_mode_allowed: Counter,
        // Envoy 1.40 lists these too; always 0 here: what counts them (filter state,
        // dynamic metadata ingestion, validate_mutations, header limits, shadow_mode) is
        // refused or not kept.
        filter_state_name_collision: Counter,
        ignored_dynamic_metadata: Counter,
        invalid: Counter,
        omitted_response_headers: Counter,
        request_header_limits_reached: Counter,
        response_header_limits_reached: Counter,
        shadow_denied: Counter,
        shadow_error: Counter,
    }
);

stat_scope!(
    NetworkExtAuthzStats,
    NetworkExtAuthzCells {
        total: Counter,
        ok: Counter,
        denied: Counter,
        error: Counter,
        failure_mode_allowed: Counter,
        cx_closed: Counter,
        // Envoy 1.40 lists it; 0 here (`filter_enabled_metadata` is refused).
        disabled: Counter,
        active: Gauge,
    }
);

stat_scope!(
    ConnectionLimitStats,
    ConnectionLimitCells {
        limited_connections: Counter,
        active_connections: Gauge,
    }
);

stat_scope!(
    RbacShadowStats,
    RbacShadowCells {
        shadow_allowed: Counter,
        shadow_denied: Counter,
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{dec, inc, StatsRegistry};

    #[test]
    fn active_faults_sum_over_shards_and_names_follow_envoy() {
        let mut registry = StatsRegistry::new(3);
        let fault = registry.scope::<FaultStats>("http.ingress.fault".into());
        inc(&fault.shard(0).active_faults);
        inc(&fault.shard(2).active_faults);
        inc(&fault.shard(2).active_faults);
        dec(&fault.shard(1).active_faults);
        assert_eq!(fault.active_faults(), 2);
        let rl = registry.scope::<LocalRateLimitStats>("rl.http_local_rate_limit".into());
        assert_eq!(rl.shard_count(), 3);
        let names: Vec<_> = registry.read_all().into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"http.ingress.fault.active_faults".to_string()));
        assert!(names.contains(&"rl.http_local_rate_limit.rate_limited".to_string()));
        assert!(names.contains(&"rl.http_local_rate_limit.shadow_mode".to_string()));
    }
}
