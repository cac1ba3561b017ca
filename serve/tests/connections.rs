//! Clients that stall or misbehave, against the server on 127.0.0.1 over raw TCP:
//! hundreds of stalled uploads and half-sent headers do not delay a normal client and
//! are closed when their time limit passes (the uploads answered 408), idle keep-alive
//! connections are closed, and connections past the cap get 503. The limits are set
//! small here so the tests stay short.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::TestServer;
use common::http::{Conn, get, request};
use tpsnet_serve::ServerConfig;

const MODEL: &str = "resnet20";

/// Opens a connection that sends the headers of a 1 MiB upload and one byte of it.
fn stalled_upload(addr: SocketAddr, route: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST {route} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\nP",
        1 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// Opens a connection that sends only part of a request's headers.
fn stalled_headers(addr: SocketAddr, route: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!("POST {route} HTTP/1.1\r\nHost: {addr}\r\nContent-Le");
    s.write_all(head.as_bytes()).unwrap();
    s
}

/// Reads until the server closes the connection (or `until` passes); returns what was
/// read and when the connection closed.
fn read_until_closed(s: &mut TcpStream, until: Instant) -> (String, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), None);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(Instant::now()),
                );
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(Instant::now()),
                );
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading a stalled connection: {e}"),
        }
    }
}

#[test]
fn hundreds_of_stalled_connections_neither_delay_others_nor_stay_open() {
    const UPLOADS: usize = 200;
    const HALF_HEADERS: usize = 100;
    let header_limit = Duration::from_secs(3);
    let body_limit = Duration::from_secs(3);
    let cfg = ServerConfig {
        header_timeout: header_limit,
        body_timeout: body_limit,
        ..ServerConfig::default()
    };
    let server = TestServer::start(common::classifier(MODEL, 64), cfg);
    let (addr, classify) = (server.addr, server.route("classify"));
    let png = common::cifar_pngs(1).remove(0);
    let opened = Instant::now();
    let mut uploads: Vec<TcpStream> = (0..UPLOADS)
        .map(|_| stalled_upload(addr, &classify))
        .collect();
    let mut halves: Vec<TcpStream> = (0..HALF_HEADERS)
        .map(|_| stalled_headers(addr, &classify))
        .collect();

    // A normal client is answered while they are all open, well before any limit.
    let t = Instant::now();
    assert_eq!(get(addr, "/v2/health/ready").status, 200);
    let r = request(addr, "POST", &classify, &[], &png);
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["predictions"][0]["class"].is_string());
    let open = server.metric("tpsnet_open_connections").unwrap();
    assert!(
        open >= (UPLOADS + HALF_HEADERS) as f64,
        "only {open} connections open: the stalled ones were not all accepted"
    );
    assert!(
        took < Duration::from_secs(2) && opened.elapsed() < header_limit,
        "a normal client took {took:?} beside {} stalled connections",
        UPLOADS + HALF_HEADERS
    );

    // Each stalled upload is answered 408 and closed once its body limit passes; each
    // half-sent header is closed once the header limit passes; none much later.
    let until = opened + body_limit.max(header_limit) + Duration::from_secs(10);
    for s in &mut uploads {
        let (answer, closed) = read_until_closed(s, until);
        let closed = closed.expect("a stalled upload was never closed");
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a stalled upload got {answer:?}"
        );
        assert!(answer.contains("--body-timeout-s"), "{answer}");
        assert!(closed.duration_since(opened) >= body_limit - Duration::from_millis(100));
    }
    for s in &mut halves {
        let (answer, closed) = read_until_closed(s, until);
        let closed = closed.expect("a half-sent header was never closed");
        assert!(answer.is_empty(), "a half-sent header got {answer:?}");
        assert!(closed.duration_since(opened) >= header_limit - Duration::from_millis(100));
    }
    let timeouts = |phase: &str| {
        server
            .metric(&format!(
                "tpsnet_connection_timeouts_total{{phase=\"{phase}\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert_eq!(timeouts("body"), UPLOADS as f64);
    assert_eq!(timeouts("headers"), HALF_HEADERS as f64);
    assert_eq!(
        server.metric(&format!(
            "tpsnet_request_errors_total{{endpoint=\"classify\",model=\"{MODEL}\",code=\"408\"}}"
        )),
        Some(UPLOADS as f64)
    );
    // Only the metrics request's own connection (and perhaps the normal client's, closing).
    assert!(server.metric("tpsnet_open_connections").unwrap() <= 3.0);
    server.stop().unwrap();
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let keep_alive = Duration::from_millis(600);
    let header = Duration::from_millis(900);
    let cfg = ServerConfig {
        keep_alive_timeout: keep_alive,
        header_timeout: header,
        ..ServerConfig::default()
    };
    let server = TestServer::start(common::classifier(MODEL, 64), cfg);
    let addr = server.addr;

    // Requests on one connection keep it open, even with pauses shorter than the limit.
    let mut conn = Conn::open(addr).unwrap();
    for _ in 0..3 {
        let r = conn.send("GET", "/v2/health/live", &[], b"").unwrap();
        assert_eq!(r.status, 200);
        std::thread::sleep(keep_alive / 3);
    }
    // Then, idle past the limit, it is closed.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.write_all(format!("GET /v2/health/live HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let sent = Instant::now();
    let (answer, closed) = read_until_closed(&mut raw, sent + Duration::from_secs(10));
    let closed = closed.expect("an idle keep-alive connection was never closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed.duration_since(sent) >= keep_alive - Duration::from_millis(50),
        "closed after {:?}, before the keep-alive limit",
        closed.duration_since(sent)
    );
    // A connection that never sends anything is closed at the header limit.
    let mut silent = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    let (answer, closed) = read_until_closed(&mut silent, t + Duration::from_secs(10));
    assert!(answer.is_empty());
    let closed = closed.expect("a silent connection was never closed");
    assert!(closed.duration_since(t) >= header - Duration::from_millis(50));
    assert!(
        server
            .metric("tpsnet_connection_timeouts_total{phase=\"idle\"}")
            .unwrap()
            >= 2.0
    );
    drop(conn);
    server.stop().unwrap();
}

#[test]
fn connections_past_the_cap_get_503_and_a_freed_slot_is_reused() {
    let cfg = ServerConfig {
        max_connections: 4,
        retry_after_s: 3,
        ..ServerConfig::default()
    };
    let server = TestServer::start(common::classifier(MODEL, 64), cfg);
    let addr = server.addr;
    let mut held: Vec<Conn> = (0..4).map(|_| Conn::open(addr).unwrap()).collect();
    // The held connections work; a fifth is refused with advice.
    let r = held[0].send("GET", "/v2/health/live", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let r = get(addr, "/v2/health/live");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("3"));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("--max-connections")
    );
    // Closing one frees its slot, once the server has seen the close: a retry that
    // comes before that is refused (and counted) like the fifth.
    held.pop();
    let t = Instant::now();
    let mut refused_while_freeing = 0;
    loop {
        let r = get(addr, "/v2/health/live");
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        refused_while_freeing += 1;
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the slot was not freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    assert_eq!(
        server.metric("tpsnet_connections_refused_total"),
        Some(1.0 + f64::from(refused_while_freeing))
    );
    server.stop().unwrap();
}
