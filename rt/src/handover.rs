//! Listening sockets handed from one shardproxy process to the next (hot restart): a
//! SOCK_SEQPACKET unix socket in the abstract namespace per (base id, restart epoch), each
//! message a line of text with at most one descriptor attached (SCM_RIGHTS), and the
//! process-wide registers of what this process listens on (to hand over) and what it took over
//! (to listen with instead of binding).
use std::{
    collections::HashMap,
    io::{self, IoSlice, IoSliceMut},
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
};

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr,
};

/// The largest message exchanged (a line naming a socket, or a command).
const MESSAGE: usize = 256;

/// The hand-over socket of the process running restart `epoch` under `base_id`.
fn address(base_id: u32, epoch: u32) -> io::Result<UnixAddr> {
    let name = format!("shardproxy_hot_restart_{base_id}_{epoch}");
    UnixAddr::new_abstract(name.as_bytes()).map_err(io::Error::from)
}

fn seqpacket() -> io::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// Listens for the next epoch's process (blocking accepts; run it on its own thread).
pub fn listen(base_id: u32, epoch: u32) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    socket::bind(fd.as_raw_fd(), &address(base_id, epoch)?)?;
    socket::listen(&fd, socket::Backlog::new(4).map_err(io::Error::from)?)?;
    Ok(fd)
}

pub fn accept(listener: &OwnedFd) -> io::Result<OwnedFd> {
    socket::accept(listener.as_fd()).map_err(io::Error::from)
}

/// Connects to the process running restart `epoch` under `base_id`.
pub fn connect(base_id: u32, epoch: u32) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    socket::connect(fd.as_raw_fd(), &address(base_id, epoch)?)?;
    Ok(fd)
}

/// Sends one message, with `fd` attached when given.
pub fn send(peer: &OwnedFd, message: &str, fd: Option<BorrowedFd>) -> io::Result<()> {
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let rights = raw.as_ref().map(|r| ControlMessage::ScmRights(r));
    let cmsgs: Vec<ControlMessage> = rights.into_iter().collect();
    let iov = [IoSlice::new(message.as_bytes())];
    socket::sendmsg::<()>(peer.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one message and the descriptors attached to it; `None` when the peer closed.
pub fn recv(peer: &OwnedFd) -> io::Result<Option<(String, Vec<OwnedFd>)>> {
    let mut buffer = [0u8; MESSAGE];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [IoSliceMut::new(&mut buffer)];
    let received = socket::recvmsg::<()>(
        peer.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in received.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: SCM_RIGHTS just installed these descriptors in this process; nothing else
            // owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let length = received.bytes;
    if length == 0 && fds.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
    Ok(Some((text, fds)))
}

/// What kind of listening socket a registered descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A shard's listener socket (one of a SO_REUSEPORT group).
    Listener,
    /// The admin interface's socket.
    Admin,
}

struct Registered {
    role: Role,
    address: SocketAddr,
    /// A duplicate: the socket's owner keeps its own descriptor.
    fd: OwnedFd,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static LISTENING: Mutex<Vec<(u64, Registered)>> = Mutex::new(Vec::new());
/// Taken-over sockets by role and address, each slot emptied when a shard takes it.
type TakenOver = HashMap<(Role, SocketAddr), Vec<Option<OwnedFd>>>;

static TAKEN_OVER: Mutex<Option<TakenOver>> = Mutex::new(None);

/// A socket this process listens on, handed over to the next epoch while the registration
/// lives (drop it when the socket closes: its duplicate descriptor closes with it).
pub struct Registration(u64);

impl Registration {
    pub fn new(role: Role, address: SocketAddr, socket: BorrowedFd) -> io::Result<Self> {
        let fd = socket.try_clone_to_owned()?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let entry = Registered { role, address, fd };
        lock(&LISTENING).push((id, entry));
        Ok(Self(id))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&LISTENING).retain(|(id, _)| *id != self.0);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether this process's sockets were handed to another process (they are then shared:
/// closing one must not shut it down).
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

pub fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::Relaxed)
}

/// Sends every registered socket to `peer`, one message each (`L <address>` or `A <address>`),
/// then `END`.
pub fn send_all(peer: &OwnedFd) -> io::Result<usize> {
    let listening = lock(&LISTENING);
    HANDED_OVER.store(true, Ordering::Relaxed);
    for (_, entry) in listening.iter() {
        let tag = match entry.role {
            Role::Listener => "L",
            Role::Admin => "A",
        };
        send(
            peer,
            &format!("{tag} {}", entry.address),
            Some(entry.fd.as_fd()),
        )?;
    }
    send(peer, "END", None)?;
    Ok(listening.len())
}

/// Receives what [`send_all`] sends and keeps it for [`take`]; how many sockets came.
pub fn receive_all(peer: &OwnedFd) -> io::Result<usize> {
    let mut taken = TakenOver::new();
    let mut count = 0;
    while let Some((message, fds)) = recv(peer)? {
        if message == "END" {
            break;
        }
        let parsed = message.split_once(' ').and_then(|(tag, address)| {
            let role = match tag {
                "L" => Role::Listener,
                "A" => Role::Admin,
                _ => return None,
            };
            Some((role, address.parse::<SocketAddr>().ok()?))
        });
        let Some(key) = parsed else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected hand-over message {message:?}"),
            ));
        };
        count += fds.len();
        taken
            .entry(key)
            .or_default()
            .extend(fds.into_iter().map(Some));
    }
    *lock(&TAKEN_OVER) = Some(taken);
    Ok(count)
}

/// The taken-over sockets for `address` that shard `shard` of `shards` listens with: every
/// `shards`-th one from its index, so each socket is taken by exactly one shard. Empty when
/// nothing was taken over (the shard binds its own).
pub fn take(role: Role, address: SocketAddr, shard: usize, shards: usize) -> Vec<OwnedFd> {
    let mut taken = lock(&TAKEN_OVER);
    let Some(sockets) = taken.as_mut().and_then(|t| t.get_mut(&(role, address))) else {
        return Vec::new();
    };
    sockets
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| i % shards.max(1) == shard)
        .filter_map(|(_, fd)| fd.take())
        .collect()
}

/// The listener addresses whose sockets were taken over.
pub fn listener_addresses() -> Vec<SocketAddr> {
    lock(&TAKEN_OVER).as_ref().map_or_else(Vec::new, |taken| {
        taken
            .keys()
            .filter(|(role, _)| *role == Role::Listener)
            .map(|(_, address)| *address)
            .collect()
    })
}

/// The previous process (hot restart), told to drain once this one is live.
static PARENT: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Takes over the listening sockets of the process running restart `epoch - 1` under
/// `base_id`; how many came. The connection stays open until [`release_parent`].
pub fn take_over(base_id: u32, epoch: u32) -> io::Result<usize> {
    let parent = connect(base_id, epoch - 1).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach restart epoch {} (base id {base_id}): {e}",
                epoch - 1
            ),
        )
    })?;
    send(&parent, "SOCKETS", None)?;
    let count = receive_all(&parent)?;
    *lock(&PARENT) = Some(parent);
    Ok(count)
}

/// Tells the previous process, if any, to stop listening and drain (this one is live).
pub fn release_parent() {
    if let Some(parent) = lock(&PARENT).take() {
        if let Err(e) = send(&parent, "DRAIN", None) {
            tracing::warn!("hot restart: cannot tell the previous process to drain: {e}");
        }
    }
}

/// Serves the next restart epoch on its own thread: hands it every registered socket when it
/// asks, and when it says it is live, shuts this process down (SIGTERM: drain, then exit).
pub fn serve_next(base_id: u32, epoch: u32) -> io::Result<()> {
    let listener = listen(base_id, epoch)?;
    std::thread::Builder::new()
        .name("hot-restart".into())
        .spawn(move || loop {
            let Ok(next) = accept(&listener) else {
                continue;
            };
            while let Ok(Some((message, _))) = recv(&next) {
                match message.as_str() {
                    "SOCKETS" => match send_all(&next) {
                        Ok(n) => tracing::info!("hot restart: handed {n} socket(s) over"),
                        Err(e) => tracing::warn!("hot restart: hand-over failed: {e}"),
                    },
                    "DRAIN" => {
                        tracing::info!("hot restart: the next process is live; draining");
                        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM);
                    }
                    other => tracing::warn!("hot restart: unexpected message {other:?}"),
                }
            }
        })?;
    Ok(())
}
