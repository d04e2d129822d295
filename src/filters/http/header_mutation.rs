//! HTTP filters: `envoy.filters.http.header_mutation` — the chain's request/response header
//! operations, then the per-route ones (route and virtual host, most specific first unless
//! `most_specific_header_mutations_wins`).
use bytes::Bytes;
use model::filters::{HeaderMutationConfig, HeaderOp, HttpFilter, Mutations, PerRouteFilter};

use super::per_route_levels;
use crate::stream::{
    headers::{Headers, RequestHead, ResponseHead},
    mutations::{add_header, Formatter},
    StreamContext,
};

pub(super) fn on_request(
    filter: &HttpFilter,
    config: &HeaderMutationConfig,
    cx: &StreamContext<'_>,
    request: &mut RequestHead,
    values: &dyn Formatter,
) {
    let mut run = |ops: &[HeaderOp]| {
        for op in ops {
            let value = match op {
                HeaderOp::Add(add) => values.value(&add.value, request, None),
                _ => Bytes::new(),
            };
            apply(op, value, &mut request.headers);
        }
    };
    run(&config.mutations.request);
    for_each_level(filter, config, cx, |m| run(&m.request));
}

pub(super) fn on_response(
    filter: &HttpFilter,
    config: &HeaderMutationConfig,
    cx: &StreamContext<'_>,
    request: &RequestHead,
    response: &mut ResponseHead,
    values: &dyn Formatter,
) {
    let mut run = |ops: &[HeaderOp]| {
        for op in ops {
            let value = match op {
                HeaderOp::Add(add) => values.value(&add.value, request, Some(response)),
                _ => Bytes::new(),
            };
            apply(op, value, &mut response.headers);
        }
    };
    run(&config.mutations.response);
    for_each_level(filter, config, cx, |m| run(&m.response));
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

/// Applies one header operation; `value` is an add's, rendered for this stream (Envoy applies
/// the operations one after the other).
fn apply(op: &HeaderOp, value: Bytes, headers: &mut Headers) {
    match op {
        HeaderOp::Remove(name) => {
            headers.remove(name);
        }
        HeaderOp::RemoveMatching(matcher) => headers.retain(|h| !matcher.matches(&h.name)),
        HeaderOp::Add(add) => add_header(add, value, headers),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use model::{
        filters::HttpFilterKind,
        matchers::{StringMatcher, StringPattern},
        route::{AppendAction, HeaderAdd, HeaderValue},
    };

    use super::{
        super::{on_request as run_request, on_response as run_response, test_support::*},
        *,
    };

    fn add(name: &str, value: &str, action: AppendAction) -> HeaderOp {
        HeaderOp::Add(HeaderAdd {
            name: name.to_owned().into(),
            value: value.into(),
            action,
            keep_empty: false,
        })
    }

    /// Applies `ops` in order, values rendered for a bare request.
    fn apply_all(ops: &[HeaderOp], headers: &mut Headers) {
        let req = request("GET", "/", &[]);
        for op in ops {
            let value = match op {
                HeaderOp::Add(add) => TestValues.value(&add.value, &req, None),
                _ => Bytes::new(),
            };
            apply(op, value, headers);
        }
    }

    #[test]
    fn append_actions_follow_envoy() {
        let mut h = response(200, &[("a", "1"), ("b", "2")]).headers;
        apply_all(
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
            value: "".into(),
            action: AppendAction::AppendIfExistsOrAdd,
            keep_empty: true,
        };
        add_header(&keep, Bytes::new(), &mut h);
        assert_eq!(all(&h, "f"), [""]);
        keep.action = AppendAction::OverwriteIfExistsOrAdd;
        add_header(&keep, "g".into(), &mut h);
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
        apply_all(
            &[
                HeaderOp::RemoveMatching(internal),
                HeaderOp::Remove("x-a".into()),
            ],
            &mut h,
        );
        assert!(h.is_empty());
    }

    #[test]
    fn formatted_values_render_from_the_stream() {
        let formatted = |name: &str, value: &str| {
            HeaderOp::Add(HeaderAdd {
                name: name.to_owned().into(),
                value: HeaderValue::compile(value).unwrap(),
                action: AppendAction::AppendIfExistsOrAdd,
                keep_empty: false,
            })
        };
        let world = World::new(vec![], vec![], vec![]);
        let config = HeaderMutationConfig {
            mutations: Mutations {
                request: vec![
                    formatted(
                        "x-from",
                        "%REQ(x-in)%@%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                    ),
                    formatted("x-missing", "%REQ(x-absent)%"),
                    formatted("x-echo", "%REQ(x-from)%"),
                ],
                response: vec![formatted("x-status", "%RESPONSE_CODE% %RESP(x-up)%")],
            },
            most_specific_wins: false,
        };
        let filter = HttpFilter {
            name: "hm".into(),
            disabled: false,
            kind: HttpFilterKind::HeaderMutation(Arc::new(config)),
        };
        let cx = world.cx();
        let mut req = request("GET", "/", &[("x-in", "a")]);
        futures_lite::future::block_on(run_request(&filter, &cx, &mut req, &TestValues, None));
        assert_eq!(header(&req.headers, "x-from"), Some("a@10.0.0.1"));
        // A command without a value renders nothing, and an empty value adds no header.
        assert!(!req.headers.contains("x-missing"));
        // Operations apply in order: a later one reads what an earlier one added.
        assert_eq!(header(&req.headers, "x-echo"), Some("a@10.0.0.1"));
        let mut resp = response(503, &[("x-up", "u")]);
        run_response(&filter, &cx, &req, &mut resp, &TestValues);
        assert_eq!(header(&resp.headers, "x-status"), Some("503 u"));
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
        let result = futures_lite::future::block_on(run_request(
            world.filter(),
            &cx,
            &mut req,
            &TestValues,
            None,
        ));
        assert!(matches!(result, crate::stream::FilterResult::Continue));
        let mut resp = response(200, &[("server", "upstream")]);
        run_response(world.filter(), &cx, &req, &mut resp, &TestValues);
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
