//! HTTP filters: `envoy.filters.http.header_mutation` — the chain's request/response header
//! operations, then the per-route ones (route and virtual host, most specific first unless
//! `most_specific_header_mutations_wins`).
use model::filters::{HeaderMutationConfig, HeaderOp, HttpFilter, Mutations, PerRouteFilter};

use super::per_route_levels;
use crate::stream::{
    headers::{Headers, RequestHead, ResponseHead},
    mutations::add_header,
    StreamContext,
};

pub(super) fn on_request(
    filter: &HttpFilter,
    config: &HeaderMutationConfig,
    cx: &StreamContext<'_>,
    request: &mut RequestHead,
) {
    apply(&config.mutations.request, &mut request.headers);
    for_each_level(filter, config, cx, |m| {
        apply(&m.request, &mut request.headers)
    });
}

pub(super) fn on_response(
    filter: &HttpFilter,
    config: &HeaderMutationConfig,
    cx: &StreamContext<'_>,
    response: &mut ResponseHead,
) {
    apply(&config.mutations.response, &mut response.headers);
    for_each_level(filter, config, cx, |m| {
        apply(&m.response, &mut response.headers)
    });
}

/// Runs `f` on the per-route mutations of each level that has some, in Envoy's order.
fn for_each_level(
    filter: &HttpFilter,
    config: &HeaderMutationConfig,
    cx: &StreamContext<'_>,
    mut f: impl FnMut(&Mutations),
) {
    let [route, vhost] = per_route_levels(filter, cx).map(|level| match level {
        Some(PerRouteFilter::HeaderMutation(m)) => Some(&**m),
        _ => None,
    });
    let levels = if config.most_specific_wins {
        [vhost, route]
    } else {
        [route, vhost]
    };
    levels.into_iter().flatten().for_each(&mut f);
}

/// Applies header operations in order.
pub fn apply(ops: &[HeaderOp], headers: &mut Headers) {
    for op in ops {
        match op {
            HeaderOp::Remove(name) => {
                headers.remove(name);
            }
            HeaderOp::RemoveMatching(matcher) => headers.retain(|h| !matcher.matches(&h.name)),
            HeaderOp::Add(add) => add_header(add, headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use model::{
        filters::HttpFilterKind,
        matchers::{StringMatcher, StringPattern},
        route::{AppendAction, HeaderAdd},
    };

    use super::{
        super::{on_request as run_request, on_response as run_response, test_support::*},
        *,
    };

    fn add(name: &str, value: &str, action: AppendAction) -> HeaderOp {
        HeaderOp::Add(HeaderAdd {
            name: name.to_owned().into(),
            value: value.to_owned().into(),
            action,
            keep_empty: false,
        })
    }

    #[test]
    fn append_actions_follow_envoy() {
        let mut h = response(200, &[("a", "1"), ("b", "2")]).headers;
        apply(
            &[
                add("a", "x", AppendAction::AppendIfExistsOrAdd),
                add("b", "y", AppendAction::AddIfAbsent),
                add("c", "z", AppendAction::AddIfAbsent),
                add("d", "w", AppendAction::OverwriteIfExists),
                add("b", "v", AppendAction::OverwriteIfExists),
                add("e", "u", AppendAction::OverwriteIfExistsOrAdd),
                add("f", "", AppendAction::AppendIfExistsOrAdd),
            ],
            &mut h,
        );
        assert_eq!(all(&h, "a"), ["1", "x"]);
        assert_eq!(all(&h, "b"), ["v"]);
        assert_eq!(all(&h, "c"), ["z"]);
        assert!(!h.contains("d") && !h.contains("f"));
        assert_eq!(all(&h, "e"), ["u"]);
        let mut keep = HeaderAdd {
            name: "f".into(),
            value: Bytes::new(),
            action: AppendAction::AppendIfExistsOrAdd,
            keep_empty: true,
        };
        add_header(&keep, &mut h);
        assert_eq!(all(&h, "f"), [""]);
        keep.action = AppendAction::OverwriteIfExistsOrAdd;
        keep.value = "g".into();
        add_header(&keep, &mut h);
        assert_eq!(all(&h, "f"), ["g"]);
    }

    #[test]
    fn removals_by_name_and_matcher() {
        let mut h = response(
            200,
            &[("x-a", "1"), ("x-internal-b", "2"), ("x-internal-c", "3")],
        )
        .headers;
        let internal = StringMatcher::new(StringPattern::Prefix(b"x-internal-"[..].into()), false);
        apply(
            &[
                HeaderOp::RemoveMatching(internal),
                HeaderOp::Remove("x-a".into()),
            ],
            &mut h,
        );
        assert!(h.is_empty());
    }

    fn filter(most_specific_wins: bool) -> HttpFilter {
        HttpFilter {
            name: "hm".into(),
            disabled: false,
            kind: HttpFilterKind::HeaderMutation(Arc::new(HeaderMutationConfig {
                mutations: Mutations {
                    request: vec![add("x-level", "chain", AppendAction::AppendIfExistsOrAdd)],
                    response: vec![HeaderOp::Remove("server".into())],
                },
                most_specific_wins,
            })),
        }
    }

    fn level(value: &str) -> Vec<(String, PerRouteFilter)> {
        let op = || add("x-level", value, AppendAction::OverwriteIfExistsOrAdd);
        let mutations = Mutations {
            request: vec![op()],
            response: vec![op()],
        };
        vec![(
            "hm".to_string(),
            PerRouteFilter::HeaderMutation(Arc::new(mutations)),
        )]
    }

    /// The request's and the response's `x-level` after the filter ran.
    fn levels(most_specific_wins: bool) -> (Vec<String>, Vec<String>) {
        let world = World::new(
            vec![filter(most_specific_wins)],
            level("route"),
            level("vhost"),
        );
        let cx = world.cx();
        let mut req = request("GET", "/", &[]);
        let result = futures_lite::future::block_on(run_request(world.filter(), &cx, &mut req));
        assert!(matches!(result, crate::stream::FilterResult::Continue));
        let mut resp = response(200, &[("server", "upstream")]);
        run_response(world.filter(), &cx, &req, &mut resp);
        assert!(!resp.headers.contains("server"));
        let owned = |h: &Headers| all(h, "x-level").into_iter().map(String::from).collect();
        (owned(&req.headers), owned(&resp.headers))
    }

    #[test]
    fn chain_then_levels_most_specific_first_by_default() {
        // Later operations override earlier ones: by default the virtual host's (applied last)
        // wins; with most_specific_header_mutations_wins the route's does.
        assert_eq!(levels(false), (vec!["vhost".into()], vec!["vhost".into()]));
        assert_eq!(levels(true), (vec!["route".into()], vec!["route".into()]));
    }
}
