//! gatehoused's connection limits against slow and greedy clients: the real server on a
//! loopback port, slow clients from 127.0.0.2 (a peer of its own: 127.0.0.0/8 is local on
//! Linux), real requests from 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const SLOW_PEER: &str = "127.0.0.2";

/// Connects to the server from `source`, which a std socket cannot choose.
fn connect_from(source: &str, port: u16) -> TcpStream {
    connect_with(source, port, None)
}

/// Connects from `source`, with a receive buffer of `receive_buffer` bytes if given.
fn connect_with(source: &str, port: u16, receive_buffer: Option<u32>) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap();
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// What a read says about the connection right now.
enum State {
    Open,
    /// End of file or a reset: the server closed it.
    Closed,
}

/// Reads whatever has arrived, waiting at most `wait`; bytes go to `got`.
fn poll(s: &mut TcpStream, wait: Duration, got: &mut Vec<u8>) -> State {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 8192];
    match s.read(&mut buf) {
        Ok(0) => State::Closed,
        Ok(n) => {
            got.extend_from_slice(&buf[..n]);
            State::Open
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => State::Open,
        Err(_) => State::Closed,
    }
}

/// Waits (at most `wait`) for the server to close `s`; how long it took, or None.
fn closed_within(s: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < wait {
        if let State::Closed = poll(s, Duration::from_millis(20), &mut got) {
            return Some(start.elapsed());
        }
    }
    None
}

/// Reads one response with a Content-Length from a kept-alive connection: status and body.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before a whole response head: {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    while data.len() < head_end + length {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed inside a response body");
        data.extend_from_slice(&buf[..n]);
    }
    (status, String::from_utf8_lossy(&data[head_end..head_end + length]).to_string())
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

fn seconds(s: &str) -> String {
    format!("\"{s}\"")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Sends part of a request head, then nothing.
    Partial,
    /// Sends one more header line every second, never the blank line that ends the head.
    Trickle,
}

struct SlowConn {
    kind: Slow,
    stream: TcpStream,
    opened: Instant,
    closed: Option<Instant>,
    lines: u32,
    got: Vec<u8>,
}

#[test]
fn slow_request_heads_are_cut_off_while_other_clients_are_served() {
    const PER_PEER: usize = 36;
    let server = Server::start(
        &[],
        &[
            ("header_timeout", &seconds("2s")),
            ("idle_timeout", &seconds("30s")),
            ("max_connections_per_peer", &PER_PEER.to_string()),
            ("max_connections", "200"),
        ],
    );
    let header_timeout = Duration::from_secs(2);
    let kinds = [Slow::Silent, Slow::Partial, Slow::Trickle];

    // Fill 127.0.0.2's allowance with slow connections.
    let mut slow: Vec<SlowConn> = (0..PER_PEER)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            let mut stream = connect_from(SLOW_PEER, server.port);
            let mut lines = 0;
            match kind {
                Slow::Silent => {}
                Slow::Partial => stream.write_all(b"GET /static/style.css HTTP/1.1\r\nHost: te").unwrap(),
                Slow::Trickle => {
                    stream.write_all(b"GET /static/style.css HTTP/1.1\r\nHost: test\r\n").unwrap();
                    lines = 1;
                }
            }
            SlowConn { kind, stream, opened: Instant::now(), closed: None, lines, got: Vec::new() }
        })
        .collect();
    let all_open = Instant::now();

    // (c) One more from that peer is closed at once, before a byte is read: it does not
    // wait for the header timeout.
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let mut extra = connect_from(SLOW_PEER, server.port);
        let _ = extra.write_all(&get("/static/style.css"));
        let took = closed_within(&mut extra, Duration::from_secs(1));
        assert!(took.is_some_and(|t| t < Duration::from_millis(900)), "over the per-peer cap, not closed at once");
    }

    // (a) Meanwhile, a client from 127.0.0.1 is served promptly, again and again, while the
    // slow connections are held (the header timeout has not passed yet).
    let base = server.base.clone();
    let real_client = std::thread::spawn(move || {
        let agent = common::agent();
        let mut latencies = Vec::new();
        while all_open.elapsed() < Duration::from_millis(1500) {
            let start = Instant::now();
            let mut r = agent.get(&format!("{base}/static/style.css")).call().unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.body_mut().read_to_string().unwrap().contains('{'));
            latencies.push(start.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        latencies
    });

    // (b) The slow connections are closed by the server once the header timeout has passed,
    // trickling or not; none answers, and none is closed early.
    let deadline = all_open + header_timeout + Duration::from_secs(4);
    let mut last_line = Instant::now();
    while slow.iter().any(|c| c.closed.is_none()) && Instant::now() < deadline {
        let trickle_now = last_line.elapsed() >= Duration::from_secs(1);
        if trickle_now {
            last_line = Instant::now();
        }
        for c in slow.iter_mut().filter(|c| c.closed.is_none()) {
            if trickle_now && c.kind == Slow::Trickle {
                let line = format!("X-Line-{}: {}\r\n", c.lines, "x".repeat(20));
                if c.stream.write_all(line.as_bytes()).is_err() {
                    c.closed = Some(Instant::now());
                    continue;
                }
                c.lines += 1;
            }
            if let State::Closed = poll(&mut c.stream, Duration::from_millis(1), &mut c.got) {
                c.closed = Some(Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let latencies = real_client.join().unwrap();

    let mut report = Vec::new();
    for kind in kinds {
        let held: Vec<Duration> =
            slow.iter().filter(|c| c.kind == kind).filter_map(|c| c.closed.map(|t| t - c.opened)).collect();
        let open = slow.iter().filter(|c| c.kind == kind && c.closed.is_none()).count();
        assert_eq!(open, 0, "{kind:?} connections still open {:?} after the header timeout", deadline - all_open);
        let (min, max) = (held.iter().min().unwrap(), held.iter().max().unwrap());
        assert!(*min >= Duration::from_millis(1500), "{kind:?} closed after {min:?}, before the header timeout");
        report.push(format!("{kind:?} closed after {min:.2?}..{max:.2?}"));
    }
    for c in &slow {
        assert!(c.got.is_empty(), "a slow connection got an answer: {:?}", String::from_utf8_lossy(&c.got));
    }
    let trickled = slow.iter().filter(|c| c.kind == Slow::Trickle).map(|c| c.lines).min().unwrap();
    assert!(trickled >= 2, "the trickling connections were sending header lines when cut off ({trickled} lines)");
    assert!(latencies.len() >= 5, "{latencies:?}");
    let slowest = latencies.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(1), "the real client waited {slowest:?}");
    eprintln!(
        "{PER_PEER} slow connections held; {} requests from another peer meanwhile, slowest {slowest:.2?}; {}",
        latencies.len(),
        report.join(", ")
    );

    // Their slots are given back: 127.0.0.2 is served again.
    let mut again = connect_from(SLOW_PEER, server.port);
    again.write_all(&get("/static/style.css")).unwrap();
    assert_eq!(read_response(&mut again).0, 200);
}

/// Sends a request head promising `length` bytes of body, then one byte every 300 ms; the
/// answer the server gives, read to the end, and how long after the head the server closed
/// the connection.
fn slow_body(port: u16, head: &str, length: usize) -> (String, Duration) {
    let mut s = connect_from(SLOW_PEER, port);
    s.write_all(format!("{head}Host: test\r\nContent-Length: {length}\r\n\r\n").as_bytes()).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(15) {
        if let State::Closed = poll(&mut s, Duration::from_millis(300), &mut got) {
            break;
        }
        if !got.is_empty() {
            // The answer has come; read to its end without sending more.
            while start.elapsed() < Duration::from_secs(15) {
                if let State::Closed = poll(&mut s, Duration::from_millis(100), &mut got) {
                    break;
                }
            }
            break;
        }
        if sent < length - 1 && s.write_all(b"a").is_ok() {
            sent += 1;
        }
    }
    let took = start.elapsed();
    assert!(sent + 1 < length, "the body was never meant to be complete");
    (String::from_utf8_lossy(&got).to_string(), took)
}

#[test]
fn slow_request_bodies_are_cut_off_with_408() {
    let server = Server::start(&[], &[("header_timeout", &seconds("1s")), ("request_timeout", &seconds("3s"))]);
    let token = server.token("admin").1;
    let api_head =
        format!("POST /api/v1/users HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n");
    let form_head = "POST /signin HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n";
    let ((api, api_took), (form, form_took)) = std::thread::scope(|scope| {
        let api = scope.spawn(|| slow_body(server.port, &api_head, 1000));
        let form = scope.spawn(|| slow_body(server.port, form_head, 1000));
        (api.join().unwrap(), form.join().unwrap())
    });
    for (answer, took, what) in [(&api, api_took, "API"), (&form, form_took, "form")] {
        assert!(answer.starts_with("HTTP/1.1 408 "), "{what}: {answer:?}");
        assert!(answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{what}: {answer:?}");
        assert!(answer.contains("the request took too long"), "{what}: {answer:?}");
        assert!(answer.contains("\r\nx-content-type-options: nosniff\r\n"), "{what}: {answer:?}");
        // After the request timeout, not the header timeout; the connection then closes.
        assert!(took >= Duration::from_millis(2500) && took < Duration::from_secs(7), "{what}: after {took:?}");
    }
    assert!(api.contains("{\"error\":\"the request took too long\"}"), "{api:?}");
    assert!(form.contains("<!DOCTYPE html>"), "{form:?}");
    eprintln!("slow bodies answered 408 after {api_took:.2?} (API) and {form_took:.2?} (form)");
    // The service is none the worse.
    assert_eq!(server.get("/static/style.css").status, 200);
}

#[test]
fn kept_alive_connections_wait_for_the_idle_timeout_then_the_header_timeout() {
    let server = Server::start(&[], &[("header_timeout", &seconds("1s")), ("idle_timeout", &seconds("4s"))]);

    // A second request head begun on a kept-alive connection has the header timeout, from
    // its first byte.
    let partial = std::thread::spawn({
        let port = server.port;
        move || {
            let mut s = connect_from(SLOW_PEER, port);
            s.write_all(&get("/static/style.css")).unwrap();
            assert_eq!(read_response(&mut s).0, 200);
            std::thread::sleep(Duration::from_millis(500));
            s.write_all(b"GET /static/style.css HTTP/1.1\r\n").unwrap();
            closed_within(&mut s, Duration::from_secs(6))
        }
    });

    let mut s = connect_from(SLOW_PEER, server.port);
    s.write_all(&get("/static/style.css")).unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    // Idle for longer than the header timeout but not the idle timeout: still served.
    std::thread::sleep(Duration::from_millis(2000));
    s.write_all(&get("/static/style.css")).unwrap();
    assert_eq!(read_response(&mut s).0, 200);
    // Then closed after the idle timeout.
    let idle = closed_within(&mut s, Duration::from_secs(10));
    assert!(idle.is_some_and(|t| t >= Duration::from_millis(3500)), "idle connection closed after {idle:?}");

    let head = partial.join().unwrap();
    assert!(
        head.is_some_and(|t| t >= Duration::from_millis(700) && t < Duration::from_millis(3500)),
        "a begun head was cut off after {head:?}, not the header timeout"
    );
    eprintln!("idle kept-alive connection closed after {idle:.2?}, a begun second head after {head:.2?}");
}

#[test]
fn a_client_that_does_not_read_its_answers_is_cut_off() {
    let server = Server::start(&[], &[("idle_timeout", &seconds("2s"))]);
    let one = server.get("/api/v1/openapi.json").body.len();
    // Many requests at once (pipelined), and a small receive buffer that fills up soon.
    let count = 1000;
    let mut s = connect_with(SLOW_PEER, server.port, Some(4096));
    s.write_all(&(0..count).flat_map(|_| get("/api/v1/openapi.json")).collect::<Vec<u8>>()).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    // Now read: what the server wrote before it gave up, then the end of the connection.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (mut got, mut buf) = (0, vec![0u8; 65536]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the connection is still open after {got} bytes")
            }
            Err(_) => break,
        }
    }
    assert!(got < count * one / 4, "{got} bytes of {} were sent", count * one);
    eprintln!("a client that did not read was cut off after {got} of {} bytes", count * one);
}
