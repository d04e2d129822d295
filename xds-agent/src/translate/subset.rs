//! Translator: a cluster's `lb_subset_config` → `model::subset::SubsetConfig`, refused where
//! Envoy refuses it (and where shardproxy does not implement a field).
use std::{collections::BTreeSet, sync::Arc};

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{
        lb_subset_config::{
            lb_subset_selector::LbSubsetSelectorFallbackPolicy as SelectorPolicy,
            LbSubsetFallbackPolicy, LbSubsetMetadataFallbackPolicy, LbSubsetSelector,
        },
        LbSubsetConfig,
    },
    Cluster as ClusterProto,
};
use envoy_types::pb::envoy::config::core::v3::Metadata;
use serde_json::{Map, Value};

use super::TranslateError;
use crate::names;
use model::{
    subset::{Fallback, Labels, Selector, SelectorFallback, SubsetConfig},
    LbPolicy,
};

/// The cluster's subset config: `None` without `lb_subset_config` or without selectors (then
/// Envoy balances the whole cluster, as here).
pub(super) fn subset_config(
    proto: &ClusterProto,
    lb_policy: LbPolicy,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Arc<SubsetConfig>> {
    let config = proto.lb_subset_config.as_ref()?;
    let path = format!("{path}.lb_subset_config");
    let before = errors.len();
    if config.subset_selectors.is_empty() {
        return None;
    }
    if lb_policy == LbPolicy::ClusterProvided {
        errors.push(TranslateError::new(
            &path,
            None,
            "cluster: LB policy CLUSTER_PROVIDED cannot be combined with lb_subset_config",
        ));
    }
    let fallback = match LbSubsetFallbackPolicy::try_from(config.fallback_policy) {
        Ok(LbSubsetFallbackPolicy::NoFallback) => Fallback::NoFallback,
        Ok(LbSubsetFallbackPolicy::AnyEndpoint) => Fallback::AnyEndpoint,
        Ok(LbSubsetFallbackPolicy::DefaultSubset) => Fallback::DefaultSubset,
        Err(_) => {
            let message = format!("unknown fallback_policy {}", config.fallback_policy);
            errors.push(TranslateError::new(
                format!("{path}.fallback_policy"),
                None,
                message,
            ));
            Fallback::NoFallback
        }
    };
    let fallback_list =
        match LbSubsetMetadataFallbackPolicy::try_from(config.metadata_fallback_policy) {
            Ok(LbSubsetMetadataFallbackPolicy::MetadataNoFallback) => false,
            Ok(LbSubsetMetadataFallbackPolicy::FallbackList) => true,
            Err(_) => {
                errors.push(TranslateError::new(
                    format!("{path}.metadata_fallback_policy"),
                    None,
                    format!(
                        "unknown metadata_fallback_policy {}",
                        config.metadata_fallback_policy
                    ),
                ));
                false
            }
        };
    let selectors = selectors(config, &path, errors);
    if errors.len() > before {
        return None;
    }
    let default_subset = config
        .default_subset
        .as_ref()
        .map_or_else(Labels::default, |s| match proto::to_json(s) {
            Value::Object(fields) => Labels::of(&fields),
            _ => Labels::default(),
        });
    Some(Arc::new(SubsetConfig {
        selectors,
        fallback,
        default_subset,
        panic_mode_any: config.panic_mode_any,
        list_as_any: config.list_as_any,
        locality_weight_aware: config.locality_weight_aware,
        scale_locality_weight: config.scale_locality_weight,
        fallback_list,
    }))
}

/// `subset_selectors`, each checked as Envoy checks it; a selector's fallback is read as
/// Envoy reads it (see [`Selector::fallback`]).
fn selectors(
    config: &LbSubsetConfig,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Box<[Selector]> {
    let mut out: Vec<Selector> = Vec::new();
    for (i, proto) in config.subset_selectors.iter().enumerate() {
        let path = format!("{path}.subset_selectors[{i}]");
        let keys = sorted(&proto.keys);
        if keys.is_empty() {
            errors.push(TranslateError::new(
                format!("{path}.keys"),
                None,
                "a selector needs at least one key (Envoy skips a selector without keys)",
            ));
            continue;
        }
        let Some(fallback) = selector_fallback(proto, &keys, &path, errors) else {
            continue;
        };
        // Envoy keeps a selector's fallback on the node of its last key only if it makes
        // that node: not when an earlier selector's keys begin with the same keys.
        let shadowed = out.iter().any(|earlier| earlier.keys.starts_with(&keys));
        out.push(Selector {
            keys,
            single_host: proto.single_host_per_subset,
            fallback: match shadowed {
                true => SelectorFallback::NotDefined,
                false => fallback,
            },
        });
    }
    out.into()
}

fn sorted(keys: &[String]) -> Box<[Arc<str>]> {
    let set: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
    set.into_iter().map(Arc::from).collect()
}

/// A selector's `fallback_policy`, with Envoy's checks of `fallback_keys_subset`.
fn selector_fallback(
    proto: &LbSubsetSelector,
    keys: &[Arc<str>],
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<SelectorFallback> {
    let policy = match SelectorPolicy::try_from(proto.fallback_policy) {
        Ok(policy) => policy,
        Err(_) => {
            errors.push(TranslateError::new(
                format!("{path}.fallback_policy"),
                None,
                format!("unknown fallback_policy {}", proto.fallback_policy),
            ));
            return None;
        }
    };
    let fallback_keys = sorted(&proto.fallback_keys_subset);
    let refuse = |message: &str, errors: &mut Vec<TranslateError>| {
        let at = format!("{path}.fallback_keys_subset");
        errors.push(TranslateError::new(at, None, message));
        None
    };
    if policy != SelectorPolicy::KeysSubset && !fallback_keys.is_empty() {
        return refuse(
            "fallback_keys_subset can be set only for KEYS_SUBSET fallback_policy",
            errors,
        );
    }
    Some(match policy {
        SelectorPolicy::NotDefined => SelectorFallback::NotDefined,
        SelectorPolicy::NoFallback => SelectorFallback::NoFallback,
        SelectorPolicy::AnyEndpoint => SelectorFallback::AnyEndpoint,
        SelectorPolicy::DefaultSubset => SelectorFallback::DefaultSubset,
        SelectorPolicy::KeysSubset => {
            if fallback_keys.is_empty() {
                return refuse("fallback_keys_subset cannot be empty", errors);
            }
            if !fallback_keys.iter().all(|k| keys.contains(k)) {
                return refuse(
                    "fallback_keys_subset must be a subset of selector keys",
                    errors,
                );
            }
            if fallback_keys.len() == keys.len() {
                return refuse("fallback_keys_subset cannot be equal to keys", errors);
            }
            SelectorFallback::KeysSubset(fallback_keys)
        }
    })
}

/// The fields of `metadata`'s `envoy.lb` namespace: what subsets are made by (an endpoint's
/// metadata) and picked by (a route's `metadata_match`). Envoy reads no other namespace there.
pub(super) fn lb_fields(metadata: Option<&Metadata>) -> Option<Map<String, Value>> {
    let fields = metadata?.filter_metadata.get(names::ENVOY_LB)?;
    match proto::to_json(fields) {
        Value::Object(fields) => Some(fields),
        _ => None,
    }
}
