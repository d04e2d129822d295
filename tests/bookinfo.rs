//! Tests: Istio's BookInfo in network-namespace pods — productpage, details, reviews v1/v2/v3
//! and ratings (tests/peers/bookinfo_app.py), each with Istio's init-container nat rules and a
//! shardproxy sidecar (uid 1337, Istio's golden bootstrap), behind a shardproxy ingress
//! gateway (`router` node, Istio's `0.0.0.0_8080` gateway listener), all pods on one bridge
//! and one control plane serving each its own Delta ADS and SDS, shaped like Istio 1.22's
//! resources: reviews routed by the `end-user` header (jason → v2) else 90/10 between v1 and
//! v3, ratings with a fault delay and a fault abort, STRICT mTLS, an AuthorizationPolicy
//! deny on details, and the istio_* metrics of every hop.
//!
//! Needs root (namespaces, iptables), `ip`, `iptables`, `setpriv`, `curl`, the test venv
//! (tests/peers/xds_server.py) and Istio's golden bootstrap under ../shared/fixtures.
mod common;

use std::{collections::BTreeMap, time::Instant};

use common::{http::*, istio::*, netns::*, pod::*, tls::*, xds::*, *};
use serde_json::{json, Value};

/// The node's network (a bridge in the node's namespace) and the bridge's own address: where
/// the client outside the mesh runs, and the pods' default route.
const NODE_CIDR: &str = "10.45.0.1/24";
const NODE_IP: &str = "10.45.0.1";
const PORT: u16 = 9080;
const GATEWAY_PORT: u16 = 8080;

const GATEWAY: Pod = Pod {
    kind: ProxyKind::Router,
    app: "istio-ingressgateway",
    version: "latest",
    workload: "istio-ingressgateway",
    sa: "istio-ingressgateway-service-account",
    namespace: "istio-system",
    ip: "10.45.0.2",
};
const PRODUCTPAGE: Pod = bookinfo(
    "productpage",
    "v1",
    "productpage-v1",
    "bookinfo-productpage",
    "10.45.0.10",
);
const DETAILS: Pod = bookinfo(
    "details",
    "v1",
    "details-v1",
    "bookinfo-details",
    "10.45.0.11",
);
const REVIEWS_V1: Pod = bookinfo(
    "reviews",
    "v1",
    "reviews-v1",
    "bookinfo-reviews",
    "10.45.0.12",
);
const REVIEWS_V2: Pod = bookinfo(
    "reviews",
    "v2",
    "reviews-v2",
    "bookinfo-reviews",
    "10.45.0.13",
);
const REVIEWS_V3: Pod = bookinfo(
    "reviews",
    "v3",
    "reviews-v3",
    "bookinfo-reviews",
    "10.45.0.14",
);
const RATINGS: Pod = bookinfo(
    "ratings",
    "v1",
    "ratings-v1",
    "bookinfo-ratings",
    "10.45.0.15",
);
/// The pods with a sidecar.
const APPS: [&Pod; 6] = [
    &PRODUCTPAGE,
    &DETAILS,
    &REVIEWS_V1,
    &REVIEWS_V2,
    &REVIEWS_V3,
    &RATINGS,
];
/// BookInfo's services, each with a cluster IP ([`cluster_ip`]: what the apps connect to;
/// any address on 9080 is intercepted and routed by its Host).
const SERVICES: [&str; 4] = ["productpage", "details", "reviews", "ratings"];
/// The DestinationRule subsets the VirtualServices route to, by service.
const SUBSETS: [(&str, &[&str]); 2] = [("reviews", &["v1", "v2", "v3"]), ("ratings", &["v1"])];
/// The users the VirtualServices tell apart.
const JASON: &str = "jason";
const DELAYED: &str = "tester-delay";
const ABORTED: &str = "tester-abort";
/// The fault delay on ratings for `DELAYED`, and the abort's status for `ABORTED`.
const DELAY_MS: u64 = 1000;
const ABORT_STATUS: u16 = 500;
/// The product whose details the AuthorizationPolicy denies to productpage.
const DENIED_PRODUCT: &str = "13";
/// Anonymous requests sampled for the 90/10 split.
const SAMPLE: usize = 200;

// ---------------------------------------------------------------------------------------------
// Services

/// Every pod: the gateway, then the apps.
fn all_pods() -> Vec<&'static Pod> {
    [&GATEWAY].into_iter().chain(APPS).collect()
}

/// A BookInfo pod: `app` at `version`, deployment `workload`, service account `sa`.
const fn bookinfo(
    app: &'static str,
    version: &'static str,
    workload: &'static str,
    sa: &'static str,
    ip: &'static str,
) -> Pod {
    Pod {
        version,
        workload,
        sa,
        ..Pod::sidecar(app, ip)
    }
}

fn fqdn(service: &str) -> String {
    format!("{service}.default.svc.cluster.local")
}

/// The cluster IP of `service`: 10.96.0.10 and on, in `SERVICES` order.
fn cluster_ip(service: &str) -> String {
    let i = SERVICES.iter().position(|s| *s == service).unwrap();
    format!("10.96.0.{}", 10 + i)
}

/// The pods behind `service` (of `version` only, when given).
fn pods_of(service: &str, version: Option<&str>) -> Vec<&'static Pod> {
    APPS.into_iter()
        .filter(|p| p.app == service && version.is_none_or(|v| p.version == v))
        .collect()
}

/// The service's identity: its pods' service account.
fn principal_of(service: &str) -> String {
    pods_of(service, None)[0].principal()
}

/// `outbound|9080|<subset>|<service>`.
fn subset_cluster(service: &str, subset: &str) -> String {
    outbound_name(PORT, subset, &fqdn(service))
}

// ---------------------------------------------------------------------------------------------
// Istio's resources (VirtualServices, DestinationRules, Gateway, AuthorizationPolicy and
// PeerAuthentication as Istio 1.22 renders them)

/// Every service's cluster and its subsets' (a DestinationRule's), with their endpoints.
fn service_clusters() -> (Vec<Value>, Vec<Value>) {
    let mut clusters = passthrough_clusters();
    let mut assignments = Vec::new();
    let subsets = SUBSETS
        .iter()
        .flat_map(|(service, versions)| versions.iter().map(move |v| (*service, *v)));
    for (service, subset) in SERVICES.map(|s| (s, "")).into_iter().chain(subsets) {
        let host = fqdn(service);
        clusters.push(outbound_cluster(
            PORT,
            subset,
            &host,
            &principal_of(service),
        ));
        let version = Some(subset).filter(|s| !s.is_empty());
        assignments.push(endpoints(PORT, subset, &host, &pods_of(service, version)));
    }
    (clusters, assignments)
}

/// `route` as a VirtualService's: Istio's metadata naming the VirtualService.
fn from_virtual_service(mut route: Value, name: &str, namespace: &str) -> Value {
    route["metadata"] = json!({"filter_metadata": {"istio": {"config": format!(
        "/apis/networking.istio.io/v1alpha3/namespaces/{namespace}/virtual-service/{name}")}}});
    route
}

/// A route of VirtualService `service` to `to`: for the users `user` matches (an `end-user`
/// header match), or for everyone.
fn user_route(service: &str, user: Option<Value>, to: RouteTo) -> Value {
    let matched = match user {
        Some(m) => headers_match(&[("end-user", m)]),
        None => json!({"prefix": "/"}),
    };
    let operation = format!("{}:{PORT}/*", fqdn(service));
    from_virtual_service(istio_route(matched, to, &operation), service, "default")
}

/// VirtualService reviews: jason → v2 (BookInfo's reviews-test-v2), testers → v3, everyone
/// else 90/10 between v1 and v3.
fn reviews_routes() -> Vec<Value> {
    let to = |subset| RouteTo::Cluster(subset_cluster("reviews", subset));
    let split = RouteTo::Weighted(vec![
        (subset_cluster("reviews", "v1"), 90),
        (subset_cluster("reviews", "v3"), 10),
    ]);
    vec![
        user_route("reviews", Some(json!({"exact": JASON})), to("v2")),
        user_route("reviews", Some(json!({"prefix": "tester-"})), to("v3")),
        user_route("reviews", None, split),
    ]
}

/// VirtualService ratings (BookInfo's ratings-test-delay and ratings-test-abort, one user
/// each): the delayed tester's requests wait `DELAY_MS`, the aborted tester's get
/// `ABORT_STATUS`, both at 100 % (`envoy.filters.http.fault` per route); all go to v1.
fn ratings_routes() -> Vec<Value> {
    let v1 = || RouteTo::Cluster(subset_cluster("ratings", "v1"));
    let percent_100 = json!({"numerator": 1_000_000, "denominator": "MILLION"});
    let delay = json!({"delay": {"fixed_delay": format!("{}s", DELAY_MS as f64 / 1000.0),
                                 "percentage": percent_100}});
    let abort = json!({"abort": {"http_status": ABORT_STATUS, "percentage": percent_100}});
    let with_fault = |mut route: Value, fault: Value| {
        let mut config = json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"});
        config
            .as_object_mut()
            .unwrap()
            .extend(fault.as_object().unwrap().clone());
        route["typed_per_filter_config"] = json!({"envoy.filters.http.fault": config});
        route
    };
    let tester = |name: &str| Some(json!({"exact": name}));
    vec![
        with_fault(user_route("ratings", tester(DELAYED), v1()), delay),
        with_fault(user_route("ratings", tester(ABORTED), v1()), abort),
        user_route("ratings", None, v1()),
    ]
}

/// RDS `9080` of every sidecar: each service's virtual host, the VirtualServices' routes.
fn sidecar_routes() -> Value {
    let hosts = SERVICES
        .iter()
        .map(|service| {
            let routes = match *service {
                "reviews" => reviews_routes(),
                "ratings" => ratings_routes(),
                _ => vec![default_service_route(PORT, &fqdn(service))],
            };
            service_virtual_host(&fqdn(service), PORT, &cluster_ip(service), routes)
        })
        .collect();
    route_configuration(&PORT.to_string(), hosts, true)
}

/// RDS `http.8080` of the gateway: Gateway bookinfo-gateway (port 8080, any host) and
/// VirtualService bookinfo's matches, each a route to productpage.
fn gateway_routes() -> Value {
    let matches = [
        json!({"path": "/productpage", "case_sensitive": true}),
        json!({"prefix": "/static", "case_sensitive": true}),
        json!({"path": "/login", "case_sensitive": true}),
        json!({"path": "/logout", "case_sensitive": true}),
        json!({"prefix": "/api/v1/products", "case_sensitive": true}),
    ];
    let productpage = fqdn("productpage");
    let routes = matches
        .into_iter()
        .map(|m| {
            let operation = format!(
                "{productpage}:{PORT}{}*",
                m.get("path").or(m.get("prefix")).unwrap().as_str().unwrap()
            );
            let to = RouteTo::Cluster(outbound_name(PORT, "", &productpage));
            from_virtual_service(istio_route(m, to, &operation), "bookinfo", "default")
        })
        .collect::<Vec<_>>();
    let host = json!({"name": format!("*:{GATEWAY_PORT}"), "domains": ["*"], "routes": routes,
                      "include_request_attempt_count": true});
    route_configuration(&format!("http.{GATEWAY_PORT}"), vec![host], false)
}

/// The pod's AuthorizationPolicies: on details, one denying productpage the details of
/// `DENIED_PRODUCT`.
fn authorization(pod: &Pod) -> Vec<Value> {
    match pod.app {
        "details" => vec![rbac_deny(
            "ns[default]-policy[deny-product-13]-rule[0]",
            &PRODUCTPAGE.principal(),
            &format!("/details/{DENIED_PRODUCT}"),
        )],
        _ => vec![],
    }
}

/// A sidecar's own resources: its listeners (inbound under STRICT mTLS), its inbound cluster
/// and workload certificate.
fn sidecar_resources(pod: &Pod, cert: &CertKey) -> Value {
    let service = fqdn(pod.app);
    let mode = PeerAuthn::Strict;
    let inbound = inbound_http_chains(PORT, &service, authorization(pod), mode);
    json!({
        LISTENER: [virtual_outbound(), outbound_http_listener(PORT),
                   virtual_inbound(inbound, mode)],
        CLUSTER: inbound_clusters(&[(PORT, &service)]),
        SECRET: [secret("default", cert)],
    })
}

/// The control plane's resource set: the clusters, endpoints, routes and root certificate
/// every proxy sees; per sidecar its listeners, inbound cluster and certificate; the gateway's
/// listener and certificate.
fn bookinfo_resources(pki: &Pki) -> Value {
    let (clusters, assignments) = service_clusters();
    let mut nodes = serde_json::Map::new();
    for pod in APPS {
        let cert = pki.workload_in(pod.namespace, pod.sa);
        nodes.insert(pod.node_id(), sidecar_resources(pod, &cert));
    }
    let gateway_cert = pki.workload_in(GATEWAY.namespace, GATEWAY.sa);
    nodes.insert(
        GATEWAY.node_id(),
        json!({
            LISTENER: [gateway_http_listener(GATEWAY_PORT)],
            SECRET: [secret("default", &gateway_cert)],
        }),
    );
    json!({
        "resources": {
            ROUTE: [sidecar_routes(), gateway_routes()],
            CLUSTER: clusters,
            ENDPOINT: assignments,
            SECRET: [root_ca(&pki.ca)],
        },
        "nodes": nodes,
    })
}

// ---------------------------------------------------------------------------------------------
// The cluster: namespaces, apps, proxies

/// The pods' namespaces, joined to the node's bridge; the app pods with Istio's nat rules.
struct Network {
    /// The node: the bridge, and the client outside the mesh.
    node: Netns,
    /// Each pod's namespace.
    pods: Vec<(&'static Pod, Netns)>,
}

impl Network {
    fn build() -> Network {
        let node = Netns::new("bi");
        node.bridge(NODE_CIDR);
        let pods = all_pods()
            .into_iter()
            .enumerate()
            .map(|(i, pod)| (pod, pod_namespace(&node, i, pod)))
            .collect();
        Network { node, pods }
    }

    fn of(&self, pod: &Pod) -> &Netns {
        let found = self.pods.iter().find(|(p, _)| p.workload == pod.workload);
        &found.unwrap().1
    }
}

/// Pod number `i`'s namespace on the node's bridge, with Istio's nat rules when it has a
/// sidecar.
fn pod_namespace(node: &Netns, i: usize, pod: &Pod) -> Netns {
    let ns = Netns::new(&format!("bi{i}"));
    let cidr = format!("{}/24", pod.ip);
    ns.join(node, &format!("veth{i}"), &cidr, NODE_IP);
    if pod.kind == ProxyKind::Sidecar {
        ns.istio_iptables(INBOUND_EXCLUDED);
    }
    ns
}

/// The app of `pod`, its upstream services reached at their cluster IPs.
fn start_bookinfo_app(ns: &Netns, pod: &Pod) -> Running {
    let upstreams: &[&str] = match (pod.app, pod.version) {
        ("productpage", _) => &["details", "reviews"],
        ("reviews", "v2" | "v3") => &["ratings"],
        _ => &[],
    };
    let port = PORT.to_string();
    let mut args = vec![
        "serve".to_string(),
        pod.app.into(),
        pod.version.into(),
        port,
    ];
    args.extend(
        upstreams
            .iter()
            .map(|s| format!("{s}={}:{PORT}", cluster_ip(s))),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    start_app(ns, "bookinfo_app.py", &args)
}

/// The last lines of every proxy's log.
fn all_logs(dir: &TempDir) -> String {
    all_pods()
        .into_iter()
        .map(|pod| format!("--- {}:\n{}", pod.workload, tail(&proxy_log(dir, pod))))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The client outside the mesh

/// GETs `path` from the gateway `count` times from the node (outside the mesh) with
/// `headers` (`name:value`): each answer (`status`, `elapsed_ms`, `body`, or `error`).
fn through_gateway(node: &Netns, path: &str, count: usize, headers: &[&str]) -> Vec<Value> {
    let url = format!("http://{}:{GATEWAY_PORT}{path}", GATEWAY.ip);
    let mut command = node.command(&app_python());
    command
        .arg(peer_script("bookinfo_app.py"))
        .args(["get", &url, &count.to_string()])
        .args(headers)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    serde_json::from_value(json_output(&mut command)).expect("a list of answers")
}

/// One product page through the gateway as `user` (BookInfo's login cookie; anonymous when
/// empty), with a B3 trace id the client started.
fn product_page(node: &Netns, product: &str, user: &str) -> Value {
    let cookie = format!("cookie:user={user}");
    let mut headers = vec![
        "x-b3-traceid:463ac35c9f6413ad48485a3953bb6124",
        "x-b3-sampled:1",
    ];
    if !user.is_empty() {
        headers.push(&cookie);
    }
    let path = format!("/productpage?product={product}");
    let mut answers = through_gateway(node, &path, 1, &headers);
    answers.pop().unwrap()
}

/// Which reviews version served a product page (`none` when reviews did not answer).
fn reviews_version(page: &Value) -> &str {
    page["body"]["reviews"]["body"]["version"]
        .as_str()
        .unwrap_or("none")
}

/// Panics unless the gateway answered 200 from productpage v1.
fn expect_page(page: &Value, what: &str, logs: impl Fn() -> String) {
    assert_eq!(page["status"], 200, "{what}: {page:#}\n{}", logs());
    assert_eq!(page["body"]["service"], "productpage", "{what}: {page:#}");
}

/// Counts the reviews versions that served `pages`.
fn tally(pages: &[Value], counts: &mut BTreeMap<String, u64>) {
    for page in pages {
        *counts.entry(reviews_version(page).to_string()).or_default() += 1;
    }
}

/// Pearson's chi-square of `v1` and `v3` answers against the 90/10 weights.
fn chi_square_90_10(v1: u64, v3: u64) -> f64 {
    let n = (v1 + v3) as f64;
    let (e1, e3) = (0.9 * n, 0.1 * n);
    (v1 as f64 - e1).powi(2) / e1 + (v3 as f64 - e3).powi(2) / e3
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// `istio_requests_total`'s labels of one hop as `reporter` sees it: the source and
/// destination workloads and their SPIFFE principals, the destination service, the response
/// code.
fn hop(
    reporter: &'static str,
    from: &'static Pod,
    to: &'static Pod,
    code: &'static str,
) -> Vec<(&'static str, String)> {
    vec![
        ("reporter", reporter.into()),
        ("source_workload", from.workload.into()),
        ("source_workload_namespace", from.namespace.into()),
        ("source_app", from.app.into()),
        ("source_principal", from.principal()),
        ("destination_workload", to.workload.into()),
        ("destination_workload_namespace", to.namespace.into()),
        ("destination_canonical_revision", to.version.into()),
        ("destination_principal", to.principal()),
        ("destination_service", fqdn(to.app)),
        ("request_protocol", "http".into()),
        ("response_code", code.into()),
    ]
}

/// Waits until both sides of the hop `from` → `to` count a `code` request: the client's
/// sidecar (or the gateway) as `source`, the server's as `destination`, which also knows the
/// connection was mutual TLS.
fn expect_hop(net: &Network, from: &'static Pod, to: &'static Pod, code: &'static str) {
    let client = hop("source", from, to, code);
    let mut server = hop("destination", from, to, code);
    server.push(("connection_security_policy", "mutual_tls".into()));
    for (pod, labels) in [(from, client), (to, server)] {
        let wanted: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        expect_series(
            net.of(pod),
            pod.workload,
            "istio_requests_total",
            &wanted,
            1.0,
        );
    }
}

/// The requests productpage's sidecar counted to each reviews version (`reporter=source`).
fn reviews_counted(net: &Network) -> BTreeMap<String, u64> {
    let mut counted = BTreeMap::new();
    let from = [
        ("reporter", "source"),
        ("source_workload", "productpage-v1"),
    ];
    for (labels, value) in series(net.of(&PRODUCTPAGE), "istio_requests_total") {
        if has_labels(&labels, &from) && labels["destination_service"] == fqdn("reviews") {
            *counted
                .entry(labels["destination_canonical_revision"].clone())
                .or_default() += value as u64;
        }
    }
    counted
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn bookinfo_through_an_ingress_gateway_and_sidecars() {
    let test = "bookinfo_through_an_ingress_gateway_and_sidecars";
    let Some(golden) = mesh_prerequisites(test) else {
        return;
    };
    let started = Instant::now();
    let dir = TempDir::new("bookinfo");
    let pods = all_pods();
    let xds = start_control_plane(&dir, &bookinfo_resources(pki()), &pods);
    let net = Network::build();
    let _apps: Vec<Running> = APPS
        .iter()
        .map(|pod| start_bookinfo_app(net.of(pod), pod))
        .collect();
    let proxies: Vec<Running> = pods
        .iter()
        .map(|pod| {
            let bootstrap = bootstrap_of(&golden, pod, &dir);
            start_proxy(Kind::Shardproxy, net.of(pod), pod, &dir, &bootstrap, 1)
        })
        .collect();
    for pod in &pods {
        wait_ready(net.of(pod), &xds, pod, &proxy_log(&dir, pod));
        expect_no_nacks(&xds, pod);
    }
    eprintln!("{} pods ready in {:?}", pods.len(), started.elapsed());
    let logs = || all_logs(&dir);
    let mut served: BTreeMap<String, u64> = BTreeMap::new();

    jason_sees_reviews_v2(&net, &mut served, logs);
    anonymous_users_split_90_10(&net, &mut served, logs);
    ratings_faults_delay_and_abort(&net, &mut served, logs);
    details_denied_by_authorization_policy(&net, &mut served, logs);
    plaintext_refused_under_strict_mtls(&net, logs);
    every_hop_in_istio_metrics(&net, &served, logs);
    eprintln!("bookinfo done in {:?}", started.elapsed());
    drop(proxies);
}

/// jason's product page: reviews v2 (black stars) with ratings; his `end-user`, the
/// gateway's x-request-id and the client's B3 trace id reach every service.
fn jason_sees_reviews_v2(
    net: &Network,
    served: &mut BTreeMap<String, u64>,
    logs: impl Fn() -> String,
) {
    let pages: Vec<Value> = (0..3)
        .map(|_| product_page(&net.node, "0", JASON))
        .collect();
    tally(&pages, served);
    for page in &pages {
        expect_page(page, "jason's page", &logs);
        let body = &page["body"];
        assert_eq!(body["user"], JASON, "{body:#}");
        assert_eq!(body["details"]["status"], 200, "{body:#}");
        assert_eq!(body["details"]["body"]["version"], "v1", "{body:#}");
        assert_eq!(
            reviews_version(page),
            "v2",
            "jason routed by header: {body:#}"
        );
        let reviews = &body["reviews"]["body"];
        assert_eq!(reviews["stars"], "black", "{body:#}");
        let ratings = &reviews["ratings"];
        assert_eq!(ratings["status"], 200, "{body:#}");
        assert_eq!(ratings["body"]["service"], "ratings", "{body:#}");

        let request_id = &body["seen"]["x-request-id"];
        assert!(
            request_id.as_str().is_some_and(|id| !id.is_empty()),
            "the gateway gives each request an id: {body:#}"
        );
        for (hop, seen) in [
            ("details", &body["details"]["body"]["seen"]),
            ("reviews", &reviews["seen"]),
            ("ratings", &ratings["body"]["seen"]),
        ] {
            assert_eq!(&seen["x-request-id"], request_id, "{hop}: {body:#}");
            assert_eq!(seen["end-user"], JASON, "{hop}: {body:#}");
            assert_eq!(
                seen["x-b3-traceid"], "463ac35c9f6413ad48485a3953bb6124",
                "{hop}: {body:#}"
            );
        }
    }
}

/// Anonymous users get reviews v1 or v3, never v2, in a split the 90/10 weights explain:
/// Pearson's chi-square with one degree of freedom below 15.14 (p = 0.0001; the expected 20 v3
/// pages of 200 may then range over about 4 to 36).
fn anonymous_users_split_90_10(
    net: &Network,
    served: &mut BTreeMap<String, u64>,
    logs: impl Fn() -> String,
) {
    let headers = ["x-b3-sampled:0"];
    let pages = through_gateway(&net.node, "/productpage?product=0", SAMPLE, &headers);
    tally(&pages, served);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for page in &pages {
        expect_page(page, "an anonymous page", &logs);
        let version = reviews_version(page);
        *counts.entry(version).or_default() += 1;
        let ratings = &page["body"]["reviews"]["body"]["ratings"];
        match version {
            "v1" => assert!(ratings.is_null(), "v1 calls no ratings: {page:#}"),
            "v3" => assert_eq!(ratings["status"], 200, "{page:#}"),
            other => panic!("anonymous page served by reviews {other}: {page:#}"),
        }
    }
    let (v1, v3) = (
        counts.get("v1").copied().unwrap_or(0),
        counts.get("v3").copied().unwrap_or(0),
    );
    let chi = chi_square_90_10(v1, v3);
    eprintln!("90/10 split: v1 {v1}, v3 {v3}, chi-square {chi:.2}");
    assert_eq!(v1 + v3, SAMPLE as u64, "{counts:?}");
    assert!(
        chi < 15.14,
        "v1 {v1} and v3 {v3} of {SAMPLE} do not fit 90/10 (chi-square {chi:.2} >= 15.14)"
    );
}

/// The testers' pages go to reviews v3; ratings, called by it, is delayed for one by the
/// fault delay and refused for the other by the fault abort, while the page still renders.
fn ratings_faults_delay_and_abort(
    net: &Network,
    served: &mut BTreeMap<String, u64>,
    logs: impl Fn() -> String,
) {
    let delayed = product_page(&net.node, "0", DELAYED);
    let aborted = product_page(&net.node, "0", ABORTED);
    tally(&[delayed.clone(), aborted.clone()], served);
    for (page, who) in [(&delayed, DELAYED), (&aborted, ABORTED)] {
        expect_page(page, who, &logs);
        assert_eq!(reviews_version(page), "v3", "{who}: {page:#}");
    }
    let ratings = &delayed["body"]["reviews"]["body"]["ratings"];
    assert_eq!(ratings["status"], 200, "delayed, not refused: {delayed:#}");
    assert!(
        ratings["elapsed_ms"]
            .as_u64()
            .is_some_and(|ms| ms >= DELAY_MS - 10),
        "ratings answered reviews before the {DELAY_MS} ms fault delay: {delayed:#}"
    );
    let ratings = &aborted["body"]["reviews"]["body"]["ratings"];
    assert_eq!(
        ratings["status"], ABORT_STATUS,
        "the fault abort's status: {aborted:#}"
    );
    assert!(
        ratings["body"]
            .as_str()
            .is_some_and(|b| b.contains("fault filter abort")),
        "Envoy's abort body: {aborted:#}"
    );
    assert!(
        ratings["elapsed_ms"]
            .as_u64()
            .is_some_and(|ms| ms < DELAY_MS),
        "the abort is not delayed: {aborted:#}"
    );
}

/// The AuthorizationPolicy on details denies productpage one product's details (403
/// `RBAC: access denied`); the page still renders with its reviews, and other products'
/// details are served.
fn details_denied_by_authorization_policy(
    net: &Network,
    served: &mut BTreeMap<String, u64>,
    logs: impl Fn() -> String,
) {
    let denied = product_page(&net.node, DENIED_PRODUCT, "");
    let allowed = product_page(&net.node, "7", "");
    tally(&[denied.clone(), allowed.clone()], served);
    expect_page(&denied, "the denied product's page", &logs);
    let details = &denied["body"]["details"];
    assert_eq!(details["status"], 403, "{denied:#}");
    assert_eq!(details["body"], "RBAC: access denied", "{denied:#}");
    assert_eq!(denied["body"]["reviews"]["status"], 200, "{denied:#}");
    expect_page(&allowed, "another product's page", &logs);
    assert_eq!(allowed["body"]["details"]["status"], 200, "{allowed:#}");
    assert_eq!(allowed["body"]["details"]["body"]["id"], "7", "{allowed:#}");
}

/// STRICT mTLS: a plaintext connection to details' app port from another pod, bypassing that
/// pod's sidecar (as uid 1337), finds no inbound chain and is closed; the app's own request
/// to the details service goes through its sidecar with mTLS.
fn plaintext_refused_under_strict_mtls(net: &Network, logs: impl Fn() -> String) {
    let url = format!("http://{}:{PORT}/details/0", DETAILS.ip);
    let service_url = format!("http://{}:{PORT}/details/0", cluster_ip("details"));
    let details = net.of(&DETAILS);
    let before = counter(
        &stats(details),
        "listener.0.0.0.0_15006.no_filter_chain_match",
    );
    let plaintext = curl_in(net.of(&PRODUCTPAGE), PROXY_UID, &url);
    assert!(
        plaintext.is_err(),
        "plaintext reached details' app under STRICT: {:?}",
        plaintext.as_ref().map(|a| (a.status, &a.body)).ok()
    );
    expect_counters(
        details,
        "details",
        &[(
            "listener.0.0.0.0_15006.no_filter_chain_match".into(),
            before + 1,
        )],
        &logs,
    );
    let meshed = curl_in(net.of(&PRODUCTPAGE), APP_UID, &service_url)
        .unwrap_or_else(|e| panic!("productpage's app to details: {e}\n{}", logs()));
    assert_eq!(meshed.status, 200, "{}", meshed.body);
}

/// istio_requests_total names both workloads of every hop on both of its sidecars (the
/// gateway's as source), with the fault's and the policy's codes; productpage's sidecar
/// counted exactly the pages each reviews version served.
fn every_hop_in_istio_metrics(
    net: &Network,
    served: &BTreeMap<String, u64>,
    logs: impl Fn() -> String,
) {
    expect_hop(net, &GATEWAY, &PRODUCTPAGE, "200");
    expect_hop(net, &PRODUCTPAGE, &DETAILS, "200");
    expect_hop(net, &PRODUCTPAGE, &DETAILS, "403");
    for reviews in [&REVIEWS_V1, &REVIEWS_V2, &REVIEWS_V3] {
        expect_hop(net, &PRODUCTPAGE, reviews, "200");
    }
    expect_hop(net, &REVIEWS_V2, &RATINGS, "200");
    expect_hop(net, &REVIEWS_V3, &RATINGS, "200");
    let injected = |code: &'static str, flags: &'static str| {
        let wanted = [
            ("reporter", "source"),
            ("source_workload", "reviews-v3"),
            ("destination_service", "ratings.default.svc.cluster.local"),
            ("response_code", code),
            ("response_flags", flags),
        ];
        expect_series(
            net.of(&REVIEWS_V3),
            "reviews-v3",
            "istio_requests_total",
            &wanted,
            1.0,
        );
    };
    injected("200", "DI");
    injected("500", "FI");

    let expected: BTreeMap<String, u64> = served
        .iter()
        .filter(|(version, _)| version.starts_with('v'))
        .map(|(v, n)| (v.clone(), *n))
        .collect();
    let counted = poll_for(SOON, || {
        let counted = reviews_counted(net);
        (counted == expected).then_some(counted)
    });
    assert!(
        counted.is_some(),
        "productpage's sidecar counted {:?} requests per reviews version; the pages say {expected:?}\n{}",
        reviews_counted(net),
        logs()
    );
}
