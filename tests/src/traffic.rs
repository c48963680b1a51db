//! A live TCP stream for passive-health tests and benchmarks: a sink in
//! one namespace, a writer in another that sends until told to stop
//! (write errors and stalls are the point under a broken upstream, not
//! failures).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use crate::Netns;

/// Streams from `from` to a sink on `to` (listening on `address`, which
/// `to` holds) until `stop`.
pub fn stream_until(from: &Netns, to: &Netns, address: IpAddr, stop: &AtomicBool) {
    let listener = to
        .run(|| TcpListener::bind((address, 0)).expect("sink binds"))
        .expect("entering the sink's namespace");
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let Ok((mut socket, _)) = listener.accept() else { return };
            let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buffer = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(0) = socket.read(&mut buffer) {
                    return;
                }
            }
        });
        let _ = from.run(|| {
            let address = SocketAddr::from((address, port));
            let Ok(mut socket) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else {
                stop.store(true, Ordering::Relaxed);
                return;
            };
            let _ = socket.set_write_timeout(Some(Duration::from_millis(200)));
            let chunk = vec![0x5a; 16 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if socket.write(&chunk).is_err() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
    });
}

/// Sets its flag when dropped: a failed assertion in a thread scope that
/// runs a stream ends the stream instead of leaving the scope waiting.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
