
xds_listener
	127.0.0.1¨F—
JtlsZa.example.com
envoy.filters.network.tcp_proxy"\
Jtype.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
snibackendJ}
$envoy.filters.listener.tls_inspectorU
Stype.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector