# Writes the seed corpora of the targets added with this script (fuzz/seeds/translator/ and
# fuzz/seeds/http1_codec/): small inputs written here. Run from the test venv (it needs PyYAML
# and xds-protos): target/test-venv/bin/python fuzz/make_seeds.py .
#
# translator: bootstraps and xDS resources as YAML/JSON text (selector byte 0x80 | kind) and
# as proto bytes (selector = kind); kind: 0 bootstrap, 1 listener, 2 cluster, 3 route
# configuration, 4 cluster load assignment.
import json, os, sys, yaml
root = sys.argv[1]
out = os.path.join(root, "fuzz/seeds/translator")
os.makedirs(out, exist_ok=True)

ISTIO_NODE = """
node:
  id: sidecar~10.1.0.7~reviews-v1-5d8f.default~default.svc.cluster.local
  cluster: reviews.default
  metadata:
    NAME: reviews-v1-5d8f
    NAMESPACE: default
    WORKLOAD_NAME: reviews-v1
    OWNER: kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1
    MESH_ID: cluster.local
    CLUSTER_ID: Kubernetes
    ISTIO_VERSION: 1.28.0
    INSTANCE_IPS: [10.1.0.7]
    APP_CONTAINERS: [reviews]
    LABELS:
      app: reviews
      version: v1
      service.istio.io/canonical-name: reviews
      service.istio.io/canonical-revision: v1
    PROXY_CONFIG: {concurrency: 2}
static_resources:
  listeners:
  - name: inbound_9080
    address: {socket_address: {address: 127.0.0.1, port_value: 15006}}
    filter_chains:
    - filters:
      - name: istio.metadata_exchange
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
          value: {protocol: istio-peer-exchange}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: inbound
          cluster: backend
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9080}}}
"""

HTTP_ROUTES = """
static_resources:
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 8080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          route_config:
            name: local
            virtual_hosts:
            - name: api
              domains: ["api.example.com", "*.example.org"]
              routes:
              - match: {prefix: "/v1/", headers: [{name: x-canary, string_match: {exact: "1"}}]}
                route: {cluster: service, prefix_rewrite: "/", timeout: 2s, retry_policy: {retry_on: 5xx, num_retries: 2}}
              - match: {safe_regex: {regex: "^/items/[0-9]+$"}}
                route: {weighted_clusters: {clusters: [{name: service, weight: 90}, {name: backend, weight: 10}]}}
              - match: {prefix: "/"}
                direct_response: {status: 404, body: {inline_string: "not here"}}
          http_filters:
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: rl
              token_bucket: {max_tokens: 10, fill_interval: 1s}
              filter_enabled: {default_value: {numerator: 100}, runtime_key: rl_enabled}
              filter_enforced: {default_value: {numerator: 100}, runtime_key: rl_enforced}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: service
    type: STATIC
    connect_timeout: 1s
    lb_policy: LEAST_REQUEST
    load_assignment:
      cluster_name: service
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8081}}}
          load_balancing_weight: 2
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8082}}}
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8083}}}
"""

LISTENER = """
name: xds_listener
address: {socket_address: {address: 127.0.0.1, port_value: 9000}}
filter_chains:
- filter_chain_match: {server_names: [a.example.com], transport_protocol: tls}
  filters:
  - name: envoy.filters.network.tcp_proxy
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
      stat_prefix: sni
      cluster: backend
listener_filters:
- name: envoy.filters.listener.tls_inspector
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
"""

CLUSTER = """
name: eds_cluster
type: EDS
connect_timeout: 0.25s
eds_cluster_config: {eds_config: {ads: {}}}
circuit_breakers: {thresholds: [{max_connections: 100, max_pending_requests: 10}]}
outlier_detection: {consecutive_5xx: 3, interval: 5s, base_ejection_time: 30s}
"""

ROUTES = """
name: rds_routes
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {path: /health}
    direct_response: {status: 200}
  - match: {prefix: /}
    route: {cluster: c, host_rewrite_literal: upstream.internal}
"""

ASSIGNMENT = """
cluster_name: eds_cluster
endpoints:
- locality: {region: eu, zone: eu-1a}
  lb_endpoints:
  - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}
    health_status: HEALTHY
  - endpoint: {address: {socket_address: {address: 10.0.0.2, port_value: 80}}}
    load_balancing_weight: 3
"""

def write(name, selector, payload):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([selector]) + payload)

texts = {
    "bootstrap_default": (0, open(os.path.join(root, "examples/default.yaml")).read()),
    "bootstrap_tcp_proxy_lb": (0, open(os.path.join(root, "examples/tcp-proxy-lb.yaml")).read()),
    "bootstrap_istio_node": (0, ISTIO_NODE),
    "bootstrap_http_routes": (0, HTTP_ROUTES),
    "listener": (1, LISTENER),
    "cluster": (2, CLUSTER),
    "route_configuration": (3, ROUTES),
    "cluster_load_assignment": (4, ASSIGNMENT),
}
for name, (kind, text) in texts.items():
    write(name + ".yaml", 0x80 | kind, text.lstrip().encode())
# One in JSON, the other syntax the loader takes.
write("listener.json", 0x81, json.dumps(yaml.safe_load(LISTENER)).encode())

# Proto bytes through the Python protobuf runtime (xds-protos).
from google.protobuf import json_format
import importlib
for mod in [
    "envoy.config.bootstrap.v3.bootstrap_pb2",
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.local_ratelimit.v3.local_rate_limit_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.access_loggers.stream.v3.stream_pb2",
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.load_balancing_policies.round_robin.v3.round_robin_pb2",
    "udpa.type.v1.typed_struct_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
]:
    importlib.import_module(mod)
from envoy.config.bootstrap.v3.bootstrap_pb2 import Bootstrap
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
types = [Bootstrap, Listener, Cluster, RouteConfiguration, ClusterLoadAssignment]
for name, (kind, text) in texts.items():
    msg = json_format.ParseDict(yaml.safe_load(text), types[kind]())
    write(name + ".pb", kind, msg.SerializeToString(deterministic=True))

# fuzz/seeds/http1_codec/: a control byte (bit 0: responses; bit 1: responses to HEAD; bit 2:
# small limits), 8 bytes seeding how the bytes arrive, then what a peer sends.
out = os.path.join(root, "fuzz/seeds/http1_codec")
os.makedirs(out, exist_ok=True)
SEED = bytes(range(1, 9))
REQUESTS = 0x00
RESPONSES = 0x01
TO_HEAD = 0x03
http1 = {
    "get_curl": (REQUESTS, b"GET /index.html?q=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"),
    "post_length": (REQUESTS, b"POST /form HTTP/1.1\r\nHost: a.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nname=value&"),
    "post_chunked_trailers": (REQUESTS, b"POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: 42\r\n\r\n"),
    "pipelined": (REQUESTS, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    "http10_keep_alive": (REQUESTS, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /x HTTP/1.0\r\n\r\n"),
    "absolute_form": (REQUESTS, b"GET http://Example.com:8080/p?x=1 HTTP/1.1\r\nHost: other\r\nProxy-Connection: keep-alive\r\n\r\n"),
    "connect": (REQUESTS, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x00\x05hello"),
    "websocket_upgrade": (REQUESTS, b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x05hello"),
    "expect_continue": (REQUESTS, b"PUT /obj HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata"),
    "leading_empty_lines": (REQUESTS, b"\r\n\nOPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
    "smuggling_cl_te": (REQUESTS, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "small_limits": (0x04 | (4 << 3) | (2 << 5), b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: 0123456789abcdef0123456789\r\n\r\n"),
    "response_length": (RESPONSES, b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 19:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\nhello world\n"),
    "response_chunked": (RESPONSES, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/grpc\r\n\r\n7\r\n\x00\x00\x00\x00\x02hi\r\n0\r\ngrpc-status: 0\r\ngrpc-message: \r\n\r\n"),
    "response_until_close": (RESPONSES, b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\nContent-type: text/html\r\n\r\n<html>until close</html>"),
    "response_continue": (RESPONSES, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nLocation: /obj/1\r\nContent-Length: 0\r\n\r\n"),
    "response_no_content": (RESPONSES, b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\nContent-Length: 99\r\n\r\n"),
    "response_switching": (RESPONSES, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02ok"),
    "head_with_length": (TO_HEAD, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 615\r\n\r\n"),
    "head_without_length": (TO_HEAD, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"),
    # Regression inputs: a chunk line's error once depended on where it was cut (the seed 18
    # cuts between g and LF), and a HEAD response without a length was re-encoded with
    # content-length: 0 (head_without_length).
    "chunk_line_error": (REQUESTS, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\ng\n", (18).to_bytes(8, "little")),
    "head_chunked": (TO_HEAD, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n"),
}
for name, (control, message, *seed) in http1.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([control]) + (seed[0] if seed else SEED) + message)
