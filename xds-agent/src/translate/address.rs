//! Translator: socket addresses (IP literal or DNS name, with a numeric port) and the stat
//! names Envoy derives from them.
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{
    address, envoy_internal_address::AddressNameSpecifier, socket_address::PortSpecifier, Address,
    SocketAddress,
};

use super::TranslateError;

/// The host and port of `address.socket_address`. An internal address is refused here (an
/// endpoint's is read by `internal_listener_name`); pipes and named ports are rejected by the
/// walker and skipped here.
pub(super) fn host_port<'a>(
    address: &'a Address,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<(&'a str, u16)> {
    let socket = match &address.address {
        Some(address::Address::SocketAddress(socket)) => socket,
        Some(address::Address::EnvoyInternalAddress(_)) => {
            errors.push(TranslateError::new(
                format!("{path}.envoy_internal_address"),
                None,
                "an internal address names an internal listener: only the endpoints of \
                 STATIC and EDS clusters take one",
            ));
            return None;
        }
        Some(_) => return None,
        None => {
            errors.push(TranslateError::new(
                path,
                None,
                "socket_address is required",
            ));
            return None;
        }
    };
    socket_host_port(socket, &format!("{path}.socket_address"), errors)
}

/// The host and port of a `SocketAddress` at `path`.
fn socket_host_port<'a>(
    socket: &'a SocketAddress,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<(&'a str, u16)> {
    let port = match socket.port_specifier {
        Some(PortSpecifier::PortValue(port)) => match u16::try_from(port) {
            Ok(port) => port,
            Err(_) => {
                errors.push(TranslateError::new(
                    format!("{path}.port_value"),
                    None,
                    format!("port {port} is out of range"),
                ));
                return None;
            }
        },
        Some(PortSpecifier::NamedPort(_)) => return None,
        None => 0,
    };
    if socket.address.is_empty() {
        errors.push(TranslateError::new(
            format!("{path}.address"),
            None,
            "address is required",
        ));
        return None;
    }
    Some((socket.address.as_str(), port))
}

/// The internal listener an `envoy_internal_address` names, and its endpoint id; `None` for
/// any other address. An empty listener name is refused.
pub(super) fn internal_listener_name<'a>(
    address: &'a Address,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<Option<(&'a str, &'a str)>> {
    let Some(address::Address::EnvoyInternalAddress(internal)) = &address.address else {
        return Some(None);
    };
    match &internal.address_name_specifier {
        Some(AddressNameSpecifier::ServerListenerName(name)) if !name.is_empty() => {
            Some(Some((name.as_str(), internal.endpoint_id.as_str())))
        }
        _ => {
            errors.push(TranslateError::new(
                format!("{path}.envoy_internal_address.server_listener_name"),
                None,
                "the internal listener's name is required",
            ));
            None
        }
    }
}

/// An IP literal and port (listeners, admin, STATIC cluster endpoints).
pub(super) fn socket_address(
    address: &Address,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<SocketAddr> {
    let (host, port) = host_port(address, path, errors)?;
    ip_address(
        host,
        port,
        &format!("{path}.socket_address.address"),
        errors,
    )
}

/// An IP literal and port given as a `SocketAddress` at `path` (a bind address).
pub(super) fn bind_address(
    socket: &SocketAddress,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<SocketAddr> {
    let (host, port) = socket_host_port(socket, path, errors)?;
    ip_address(host, port, &format!("{path}.address"), errors)
}

fn ip_address(
    host: &str,
    port: u16,
    path: &str,
    errors: &mut Vec<TranslateError>,
) -> Option<SocketAddr> {
    match host.parse::<IpAddr>() {
        Ok(ip) => Some(SocketAddr::new(ip, port)),
        Err(_) => {
            errors.push(TranslateError::new(
                path,
                None,
                format!("{host:?} is not an IP address"),
            ));
            None
        }
    }
}

/// Envoy's stat name for an address: its text with `:` sanitised to `_`
/// (`127.0.0.1_10000`, `[__1]_80`).
pub(super) fn stat_name(address: &SocketAddr) -> String {
    address.to_string().replace(':', "_")
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::SocketAddress;

    use super::*;

    fn addr(host: &str, port: Option<PortSpecifier>) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: host.into(),
                port_specifier: port,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn ip_literals_and_errors() {
        let mut errors = Vec::new();
        let v6 = socket_address(
            &addr("::1", Some(PortSpecifier::PortValue(80))),
            "a",
            &mut errors,
        );
        assert_eq!(v6, Some("[::1]:80".parse().unwrap()));
        assert_eq!(stat_name(&v6.unwrap()), "[__1]_80");
        assert_eq!(
            stat_name(&"127.0.0.1:10000".parse().unwrap()),
            "127.0.0.1_10000"
        );
        assert!(errors.is_empty());

        assert_eq!(
            socket_address(
                &addr("example.com", Some(PortSpecifier::PortValue(1))),
                "a",
                &mut errors
            ),
            None
        );
        assert_eq!(errors[0].path, "a.socket_address.address");
        assert_eq!(
            socket_address(
                &addr("1.2.3.4", Some(PortSpecifier::PortValue(70000))),
                "a",
                &mut errors
            ),
            None
        );
        assert_eq!(errors[1].path, "a.socket_address.port_value");
        assert_eq!(socket_address(&Address::default(), "a", &mut errors), None);
        assert_eq!(errors[2].message, "socket_address is required");
        // Named ports are reported by the walker, not here.
        assert_eq!(
            socket_address(
                &addr("1.2.3.4", Some(PortSpecifier::NamedPort("x".into()))),
                "a",
                &mut errors
            ),
            None
        );
        assert_eq!(errors.len(), 3);
    }
}
