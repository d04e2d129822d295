//! Runtime: facts about this host that the data path needs — its own address, found once from
//! the interface list as Envoy finds its `local_info` address.
use std::{
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::OnceLock,
};

/// The host's first non-loopback address (IPv4 preferred), or `None` when it has none.
pub fn local_address() -> Option<IpAddr> {
    static ADDRESS: OnceLock<Option<IpAddr>> = OnceLock::new();
    *ADDRESS.get_or_init(first_interface_address)
}

fn first_interface_address() -> Option<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we own into `list`; it is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found: Vec<(String, IpAddr)> = Vec::new();
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points at a sockaddr of the family it names; each
        // branch reads it as that family's struct.
        let address = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let v4 = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let v6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr))
                }
                _ => continue,
            }
        };
        // SAFETY: `ifa_name` is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        found.push((name, address));
    }
    // SAFETY: `list` came from getifaddrs and is freed once; nothing borrows from it now.
    unsafe { libc::freeifaddrs(list) };
    let usable = |a: &IpAddr| !a.is_loopback() && !a.is_unspecified();
    let v4 = found.iter().find(|(_, a)| a.is_ipv4() && usable(a));
    v4.or_else(|| found.iter().find(|(_, a)| usable(a)))
        .map(|(_, a)| *a)
}
