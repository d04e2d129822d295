//! Dynamic config: ECDS — HTTP filter configs discovered by name (`config_discovery`). A
//! listener that names configs not held yet waits (warming) with its previous version still
//! serving; a new or changed config rebuilds the listeners that use it, or is rejected (and
//! the previous one kept) when one of them cannot be built with it.
use std::{collections::HashSet, sync::Arc, time::SystemTime};

use envoy_types::pb::envoy::{
    config::{
        core::v3::TypedExtensionConfig,
        listener::v3::{filter::ConfigType as FilterConfigType, Listener as ListenerProto},
    },
    extensions::filters::network::http_connection_manager::v3::{
        http_filter::ConfigType, HttpConnectionManager,
    },
};

use super::{apply::join, DynamicConfig, Failed, Held, Inputs, LISTENER};
use crate::{
    names,
    translate::{resources, TranslateError},
};
use model::{Listener, Snapshot};

/// The ECDS names a listener's connection managers must have before it can be built: each
/// `config_discovery` filter, unless it may start on its default config.
pub fn required_extensions(listener: &ListenerProto) -> Vec<String> {
    let managers = listener
        .filter_chains
        .iter()
        .chain(&listener.default_filter_chain)
        .flat_map(|chain| &chain.filters)
        .filter_map(|filter| match &filter.config_type {
            Some(FilterConfigType::TypedConfig(any))
                if names::type_name(&any.type_url) == names::HTTP_CONNECTION_MANAGER =>
            {
                proto::decode_any::<HttpConnectionManager>(any).ok()
            }
            _ => None,
        });
    let mut out: Vec<String> = managers
        .flat_map(|hcm| hcm.http_filters)
        .filter_map(|filter| match filter.config_type {
            Some(ConfigType::ConfigDiscovery(source))
                if !(source.apply_default_config_without_warming
                    && source.default_config.is_some()) =>
            {
                Some(filter.name)
            }
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

impl DynamicConfig {
    /// ECDS names the held and waiting listeners need.
    pub fn wanted_extensions(&self) -> Vec<String> {
        let names: HashSet<&str> = self
            .listener_extensions
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        super::sorted(names)
    }

    /// Builds a listener now, or parks it until the ECDS configs it names arrive.
    pub(super) fn accept_listener(
        &mut self,
        proto: ListenerProto,
        meta: Held<()>,
        statics: &Snapshot,
        inputs: &mut Inputs,
    ) -> Result<(), Vec<TranslateError>> {
        self.listener_extensions
            .insert(proto.name.clone(), required_extensions(&proto));
        if !self.extensions_ready(&proto.name) {
            self.awaiting.insert(proto.name, meta);
            return Ok(());
        }
        let model = self.build_listener(&proto, statics, inputs, true)?;
        self.awaiting.remove(&proto.name);
        self.listeners.insert(proto.name, meta.with(model));
        Ok(())
    }

    /// Whether every ECDS config listener `name` needs is held.
    fn extensions_ready(&self, name: &str) -> bool {
        self.listener_extensions
            .get(name)
            .is_none_or(|names| names.iter().all(|n| self.extension_configs.contains_key(n)))
    }

    /// Translates a listener with the ECDS configs held. `reuse`: an unchanged listener keeps
    /// its previous build — not when an ECDS config it reads changed (the listener's own
    /// config hash cannot tell).
    fn build_listener(
        &self,
        proto: &ListenerProto,
        statics: &Snapshot,
        inputs: &mut Inputs,
        reuse: bool,
    ) -> Result<Arc<Listener>, Vec<TranslateError>> {
        let known = self.known_clusters(statics);
        let mut ctx = inputs.context(
            &self.extension_configs,
            &self.secrets.current,
            &statics.local_peer,
        );
        if !reuse {
            ctx.previous = None;
        }
        resources::listener(proto, &known, &mut ctx)
    }

    /// Holds an ECDS config and rebuilds the listeners using it; if one cannot be built with
    /// it, the config is rejected and the previous one stays.
    pub(super) fn accept_extension(
        &mut self,
        proto: TypedExtensionConfig,
        meta: Held<()>,
        statics: &Snapshot,
        inputs: &mut Inputs,
    ) -> Result<(), Vec<TranslateError>> {
        let Some(config) = proto.typed_config else {
            return Err(vec![TranslateError::new(
                format!("extension_configs[{:?}].typed_config", proto.name),
                None,
                "typed_config is required",
            )]);
        };
        let previous = self.extension_configs.insert(proto.name.clone(), config);
        let users: Vec<String> = self
            .listener_extensions
            .iter()
            .filter(|(_, names)| names.contains(&proto.name))
            .map(|(listener, _)| listener.clone())
            .collect();
        let mut rebuilt = Vec::new();
        let mut errors = Vec::new();
        let mut unbuildable = Vec::new();
        for name in users {
            let meta: Held<()> = match (self.awaiting.get(&name), self.listeners.get(&name)) {
                (Some(waiting), _) => waiting.clone(),
                (None, Some(held)) => held.with(()),
                (None, None) => continue,
            };
            if !self.extensions_ready(&name) {
                continue;
            }
            // Held bodies decoded once already.
            let Ok(listener) = proto::decode_config::<ListenerProto>(&meta.body.value) else {
                continue;
            };
            match self.build_listener(&listener, statics, inputs, false) {
                Ok(model) => rebuilt.push((name, meta, model)),
                Err(e) => {
                    unbuildable.push((name, meta.version, join(&e)));
                    errors.extend(e);
                }
            }
        }
        if !errors.is_empty() {
            match previous {
                Some(config) => self.extension_configs.insert(proto.name, config),
                None => self.extension_configs.remove(&proto.name),
            };
            // The answer settles the wait, as in Envoy: a listener version waiting for this
            // config fails (its previous version, if any, keeps serving).
            for (name, version, reason) in unbuildable {
                if self.awaiting.remove(&name).is_some() {
                    let at = SystemTime::now();
                    let failed = Failed {
                        version,
                        reason,
                        at,
                    };
                    self.failed.insert((LISTENER.to_string(), name), failed);
                }
            }
            return Err(errors);
        }
        for (name, meta, model) in rebuilt {
            self.awaiting.remove(&name);
            self.listeners.insert(name, meta.with(model));
        }
        self.extensions.insert(proto.name, meta);
        Ok(())
    }
}
