//! Translator: `envoy.filters.http.header_mutation` (`HeaderMutation` in the chain,
//! `HeaderMutationPerRoute` per route): request and response header operations.
use std::sync::Arc;

use envoy_types::pb::{
    envoy::{
        config::common::mutation_rules::v3::{
            header_mutation::Action, HeaderMutation as HeaderOpProto,
        },
        extensions::filters::http::header_mutation::v3::{
            HeaderMutation, HeaderMutationPerRoute, Mutations as MutationsProto,
        },
    },
    google::protobuf::Any,
};

use super::common::{header_value_option, modifiable_header_name, Site};
use crate::translate::{matchers::string_matcher, TranslateContext, TranslateError};
use model::filters::{HeaderMutationConfig, HeaderOp, HttpFilterKind, Mutations, PerRouteFilter};

/// The filter in the chain.
pub(super) fn filter(
    any: &Any,
    site: &Site,
    _stat_prefix: &str,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<HttpFilterKind> {
    let proto: HeaderMutation = super::decode(any, site, errors)?;
    let mutations = mutations(proto.mutations.as_ref(), site, errors)?;
    Some(HttpFilterKind::HeaderMutation(Arc::new(
        HeaderMutationConfig {
            mutations,
            most_specific_wins: proto.most_specific_header_mutations_wins,
        },
    )))
}

/// `HeaderMutationPerRoute`.
pub(super) fn per_route(
    any: &Any,
    site: &Site,
    _ctx: &mut TranslateContext,
    errors: &mut Vec<TranslateError>,
) -> Option<PerRouteFilter> {
    let proto: HeaderMutationPerRoute = super::decode(any, site, errors)?;
    let mutations = mutations(proto.mutations.as_ref(), site, errors)?;
    Some(PerRouteFilter::HeaderMutation(Arc::new(mutations)))
}

fn mutations(
    proto: Option<&MutationsProto>,
    site: &Site,
    errors: &mut Vec<TranslateError>,
) -> Option<Mutations> {
    let Some(proto) = proto else {
        return Some(Mutations::default());
    };
    let before = errors.len();
    let request = ops(
        &proto.request_mutations,
        site,
        "mutations.request_mutations",
        errors,
    );
    let response = ops(
        &proto.response_mutations,
        site,
        "mutations.response_mutations",
        errors,
    );
    (errors.len() == before).then_some(Mutations { request, response })
}

fn ops(
    protos: &[HeaderOpProto],
    site: &Site,
    field: &str,
    errors: &mut Vec<TranslateError>,
) -> Vec<HeaderOp> {
    protos
        .iter()
        .enumerate()
        .filter_map(|(i, op)| {
            let field = format!("{field}[{i}]");
            match &op.action {
                None => {
                    errors.push(
                        site.error(&field, "one of remove, append, remove_on_match is required"),
                    );
                    None
                }
                Some(Action::Remove(name)) => {
                    modifiable_header_name(name, site, &format!("{field}.remove"), errors)
                        .map(HeaderOp::Remove)
                }
                Some(Action::Append(option)) => {
                    header_value_option(option, site, &format!("{field}.append"), errors)
                        .map(HeaderOp::Add)
                }
                Some(Action::RemoveOnMatch(m)) => {
                    let field = format!("{field}.remove_on_match.key_matcher");
                    match &m.key_matcher {
                        Some(m) => string_matcher(m, site.at(&site.path_of(&field)), errors)
                            .map(HeaderOp::RemoveMatching),
                        None => {
                            errors.push(site.error(&field, "key_matcher is required"));
                            None
                        }
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{filter_errors, one_filter, per_route_config};
    use super::*;
    use model::route::AppendAction;

    const HM: &str =
        "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";
    const PER_ROUTE: &str =
        "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute";

    #[test]
    fn header_mutation_translates() {
        let filter = one_filter(&format!(
            r#"{{name: hm, typed_config: {{"@type": "{HM}", most_specific_header_mutations_wins: true,
              mutations: {{
                request_mutations: [{{remove: X-Drop}}, {{append: {{header: {{key: x-add, value: v}}, append_action: ADD_IF_ABSENT}}}}],
                response_mutations: [{{remove_on_match: {{key_matcher: {{prefix: x-internal-}}}}}}]}}}}}}"#
        ));
        let HttpFilterKind::HeaderMutation(c) = &filter.kind else {
            panic!("{filter:?}")
        };
        assert!(c.most_specific_wins);
        let m = &c.mutations;
        assert!(matches!(&m.request[0], HeaderOp::Remove(n) if n == "x-drop"));
        assert!(
            matches!(&m.request[1], HeaderOp::Add(a) if a.name == "x-add" && a.action == AppendAction::AddIfAbsent)
        );
        assert!(
            matches!(&m.response[0], HeaderOp::RemoveMatching(k) if k.matches(b"x-internal-a"))
        );
        let per_route = per_route_config(&format!(
            r#"{{"@type": "{PER_ROUTE}", mutations: {{response_mutations: [{{remove: a}}]}}}}"#
        ));
        let PerRouteFilter::HeaderMutation(m) = per_route else {
            panic!()
        };
        assert_eq!(m.response.len(), 1);
    }

    #[test]
    fn header_mutation_errors_name_their_field() {
        let errors = filter_errors(&format!(
            r#"{{name: hm, typed_config: {{"@type": "{HM}", mutations: {{
                request_mutations: [{{remove: ":path"}}, {{}}],
                response_mutations: [{{append: {{header: {{key: a, value: "%START_TIME% %NOPE%"}}}}}}],
                query_parameter_mutations: [{{remove: q}}]}}}}}}"#
        ));
        let mut paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "f.typed_config.mutations.query_parameter_mutations",
                "f.typed_config.mutations.request_mutations[0].remove",
                "f.typed_config.mutations.request_mutations[1]",
                "f.typed_config.mutations.response_mutations[0].append.header.value",
            ],
            "{errors:#?}"
        );
    }
}
