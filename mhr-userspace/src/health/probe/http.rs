//! HTTP probes: a GET over HTTP/1.1 with `Connection: close`; a 2xx or 3xx
//! status line counts, and the round trip is the time to that line. Only
//! the status line is read, so no HTTP client library is needed.

use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{ProbePlan, socket};

/// Status lines longer than this are not HTTP.
const MAX_STATUS_LINE: usize = 1024;

fn request(to: SocketAddr, path: &str) -> String {
    let host = match to {
        SocketAddr::V4(v4) if v4.port() == 80 => v4.ip().to_string(),
        SocketAddr::V6(v6) if v6.port() == 80 => format!("[{}]", v6.ip()),
        other => other.to_string(),
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mhr-probe/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The status code of an HTTP/1.x status line.
fn status(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_ascii_whitespace();
    words.next().filter(|version| version.starts_with("HTTP/1."))?;
    words.next()?.parse().ok().filter(|code| (100..=599).contains(code))
}

pub(super) async fn get(
    plan: &ProbePlan,
    to: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<Duration> {
    let started = tokio::time::Instant::now();
    let exchange = async {
        let mut stream = socket::connect(plan, to, timeout).await??;
        stream.write_all(request(to, path).as_bytes()).await?;
        let mut line = Vec::with_capacity(128);
        let mut buffer = [0u8; 256];
        while !line.contains(&b'\n') && line.len() < MAX_STATUS_LINE {
            let length = stream.read(&mut buffer).await?;
            if length == 0 {
                break;
            }
            line.extend_from_slice(&buffer[..length]);
        }
        let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
        match status(&line[..end]) {
            Some(code) if (200..400).contains(&code) => Ok(started.elapsed()),
            Some(code) => Err(std::io::Error::other(format!("HTTP status {code}"))),
            None => Err(std::io::Error::other("not an HTTP status line")),
        }
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_host_and_closes() {
        let text = request("192.0.2.8:80".parse().unwrap(), "/health");
        assert!(text.starts_with("GET /health HTTP/1.1\r\nHost: 192.0.2.8\r\n"), "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\n"));
        assert!(request("[2001:db8::1]:80".parse().unwrap(), "/").contains("Host: [2001:db8::1]\r\n"));
        assert!(request("[2001:db8::1]:8080".parse().unwrap(), "/").contains("Host: [2001:db8::1]:8080\r\n"));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status(b"HTTP/1.1 204 No Content\r"), Some(204));
        assert_eq!(status(b"HTTP/1.0 302 Found"), Some(302));
        assert_eq!(status(b"HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(status(b"SSH-2.0-OpenSSH_9.2"), None);
        assert_eq!(status(b"HTTP/1.1 abc"), None);
        assert_eq!(status(b""), None);
    }
}
