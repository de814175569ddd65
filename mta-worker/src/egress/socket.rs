//! Outbound sockets bound to a source address. `IP_BIND_ADDRESS_NO_PORT` defers the
//! ephemeral port choice to `connect`, so the kernel can reuse a port across different
//! destinations and thousands of connections per source IP do not exhaust the port
//! range at bind time; `SO_REUSEPORT` lets several sockets share a (source, port).

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// `IP_BIND_ADDRESS_NO_PORT` from `linux/in.h` (not exported by every libc version).
const IP_BIND_ADDRESS_NO_PORT: libc::c_int = 24;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The source address is not configured on this host: not worth retrying.
    #[error("source address {ip} is not available on this host: {source}")]
    SourceUnavailable {
        ip: IpAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connect {dest} from {ip}: {source}")]
    Io {
        ip: IpAddr,
        dest: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connect {dest} from {ip}: timed out")]
    Timeout { ip: IpAddr, dest: SocketAddr },
}

fn bound_socket(ip: IpAddr, dest: SocketAddr) -> Result<Socket, ConnectError> {
    let io = |source| ConnectError::Io { ip, dest, source };
    let sock =
        Socket::new(Domain::for_address(dest), Type::STREAM, Some(Protocol::TCP)).map_err(io)?;
    sock.set_reuse_port(true).map_err(io)?;
    let one: libc::c_int = 1;
    // SAFETY: valid fd owned by `sock`, pointer/length describe a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    sock.set_nonblocking(true).map_err(io)?;
    sock.bind(&SocketAddr::new(ip, 0).into()).map_err(|e| {
        if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
            ConnectError::SourceUnavailable { ip, source: e }
        } else {
            io(e)
        }
    })?;
    Ok(sock)
}

/// Connects from `ip` to `dest` within `timeout`.
pub async fn connect_from(
    ip: IpAddr,
    dest: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let sock = bound_socket(ip, dest)?;
    let std_stream: std::net::TcpStream = sock.into();
    let ts = TcpSocket::from_std_stream(std_stream);
    match tokio::time::timeout(timeout, ts.connect(dest)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(source)) => Err(ConnectError::Io { ip, dest, source }),
        Err(_) => Err(ConnectError::Timeout { ip, dest }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_source_and_reports_missing_address() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = l.local_addr().unwrap();
        let s = connect_from("127.0.0.5".parse().unwrap(), dest, Duration::from_secs(5))
            .await
            .unwrap();
        let (_, peer) = l.accept().await.unwrap();
        assert_eq!(peer.ip(), "127.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(s.local_addr().unwrap().ip(), peer.ip());
        // 198.18.0.77 is not on this host: bind fails locally, nothing is sent.
        let e = connect_from("198.18.0.77".parse().unwrap(), dest, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectError::SourceUnavailable { .. }), "{e}");
    }
}
