//! The host side of a host-initiated connection: the `CONNECT <port>` handshake on the
//! device's Unix socket.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Longest `OK <port>` answer, newline included.
const OK_LINE_MAX: usize = 32;

/// Connect to guest port `port` through a vsock device's Unix socket `uds_path`: sends
/// `CONNECT <port>\n` and reads the `OK <host port>\n` answer byte by byte, so that no guest
/// data is consumed with it. Returns the stream, ready for data, and the host-side port.
///
/// `timeout` bounds the wait for the answer (the device itself gives the guest
/// [`VSOCK_REQUEST_TIMEOUT`](super::VSOCK_REQUEST_TIMEOUT)); the stream is returned with no
/// read timeout. A guest that refuses the connection closes the stream:
/// [`io::ErrorKind::ConnectionRefused`].
pub fn connect_guest_port(
    uds_path: &Path,
    port: u32,
    timeout: Duration,
) -> io::Result<(UnixStream, u32)> {
    let mut stream = UnixStream::connect(uds_path)?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = Vec::with_capacity(OK_LINE_MAX);
    let mut b = [0u8; 1];
    loop {
        match stream.read(&mut b) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("vsock port {port} refused the connection"),
                ))
            }
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() < OK_LINE_MAX => line.push(b[0]),
            Ok(_) => return Err(bad_answer()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    stream.set_read_timeout(None)?;
    let host_port = line
        .strip_prefix(b"OK ")
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse().ok())
        .ok_or_else(bad_answer)?;
    Ok((stream, host_port))
}

fn bad_answer() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "vsock socket answered something other than OK <port>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn serve(answer: &'static [u8]) -> (std::path::PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let dir = std::env::temp_dir().join(format!(
            "sbx-vsock-client-{}-{}",
            std::process::id(),
            answer.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 11];
            s.read_exact(&mut req).unwrap();
            s.write_all(answer).unwrap();
            req.to_vec()
        });
        (path, t)
    }

    #[test]
    fn handshake_keeps_following_bytes() {
        let (path, t) = serve(b"OK 1073741824\nguest data");
        let (mut s, port) = connect_guest_port(&path, 52, Duration::from_secs(10)).unwrap();
        assert_eq!(port, 1 << 30);
        assert_eq!(t.join().unwrap(), b"CONNECT 52\n");
        let mut rest = [0u8; 10];
        s.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"guest data");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn refusal_and_garbage() {
        let (path, t) = serve(b"");
        let e = connect_guest_port(&path, 52, Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
        let (path, t) = serve(b"NO\n");
        let e = connect_guest_port(&path, 52, Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        t.join().unwrap();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
