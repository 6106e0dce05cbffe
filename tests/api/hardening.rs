//! What an attacker's and a fault injector's day found: slow bodies, a full disk, a store
//! edited without the master key, and faults in the middle of a change. Each test here was
//! seen failing before its fix.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::{spawn_app_with, EC_DEFAULT};

/// Sends `request` on a fresh connection and reads until the server closes it, giving up
/// after `patience`. Returns what was read and whether the server closed the connection.
fn exchange(addr: &str, request: &str, patience: Duration) -> (String, bool) {
    let host = addr.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + patience;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return (String::from_utf8_lossy(&answer).into_owned(), true),
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&answer).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&answer).into_owned(), false)
}

const CHUNKED_HEALTHZ: &str =
    "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_that_never_arrives_does_not_hold_either_listener() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        &format!("{EC_DEFAULT}[server]\nbody_timeout = \"1s\"\n"),
    )
    .await;
    let (public, private) = (app.public.clone(), app.private.clone());
    let (public_answer, public_closed, private_answer, private_closed) =
        tokio::task::spawn_blocking(move || {
            let (pa, pc) = exchange(&public, CHUNKED_HEALTHZ, Duration::from_secs(4));
            let post =
                "POST /v1/assertions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                        Authorization: Bearer nobody\r\nTransfer-Encoding: chunked\r\n\r\n";
            let (qa, qc) = exchange(&private, post, Duration::from_secs(4));
            (pa, pc, qa, qc)
        })
        .await
        .unwrap();
    assert!(
        public_closed,
        "the public listener kept the connection open: {public_answer}"
    );
    // Answered as if it had no body, then closed.
    assert!(public_answer.starts_with("HTTP/1.1 200"), "{public_answer}");
    assert!(
        public_answer.contains("connection: close"),
        "{public_answer}"
    );
    assert!(
        private_closed,
        "the private listener kept the connection open: {private_answer}"
    );
    assert!(
        private_answer.starts_with("HTTP/1.1 408"),
        "{private_answer}"
    );
    assert!(private_answer.contains("body-timeout"), "{private_answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_arrive_in_time_are_served_and_oversized_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        &format!("{EC_DEFAULT}[server]\nbody_timeout = \"2s\"\n"),
    )
    .await;
    let response = app
        .admin(
            reqwest::Method::POST,
            &format!(
                "/admin/v1/keys/{}/revoke",
                app.kid_in_state("default", "next").await.unwrap()
            ),
        )
        .json(&serde_json::json!({ "reason": "test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Bodies on the public listener are ignored: the JWKS is served, the connection closed.
    let response = app
        .http
        .get(format!("{}/.well-known/jwks.json", app.public))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["connection"], "close");
    // A body larger than the private listener takes is refused at once.
    let response = app
        .http
        .post(format!("{}/v1/assertions", app.private))
        .header("content-type", "application/json")
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(response, 413).await;
    app.stop().await;
}

/// 1,000 sockets that send chunked headers and then nothing, against a process limited to
/// 256 open files: the JWKS must still answer within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_chunked_requests_do_not_stop_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwksd.toml"), EC_DEFAULT).unwrap();
    let service = crate::process::Service::start_limited(dir.path(), Some(256)).await;
    let host = service.public.trim_start_matches("http://").to_owned();
    let holders = tokio::task::spawn_blocking(move || {
        let mut sockets = Vec::new();
        let addr: std::net::SocketAddr = host.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..1000 {
            if Instant::now() > deadline {
                break;
            }
            // A listener that stopped accepting lets connections queue and then hang.
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                let _ = s.write_all(CHUNKED_HEALTHZ.as_bytes());
                sockets.push(s);
            }
        }
        sockets
    })
    .await
    .unwrap();
    assert!(
        holders.len() >= 900,
        "only {} sockets connected",
        holders.len()
    );
    // Let the listener work through the queue the burst left (the sockets stay open).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = crate::helpers::http_client();
    for _ in 0..3 {
        let started = Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(1),
            client
                .get(format!("{}/.well-known/jwks.json", service.public))
                .send(),
        )
        .await;
        let response = match response {
            Ok(Ok(r)) => r,
            other => panic!(
                "the JWKS did not answer within 1 s while 1,000 sockets were held: {other:?}\n{}",
                service.log()
            ),
        };
        assert_eq!(response.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(1));
        eprintln!(
            "JWKS answered in {:?} with {} stalled chunked requests held",
            started.elapsed(),
            holders.len()
        );
    }
    drop(holders);
    service.stop();
}

/// Malformed requests: all but the bad chunks are answered by actix-http's parser itself
/// (400 with an empty body, before any jwksd code runs); a bad chunk size reaches the body
/// guard, which answers with a problem.
fn malformed_requests() -> Vec<String> {
    let long_url = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000));
    let kinds = [
        "GARBAGE\r\n\r\n".to_owned(),
        "\u{1}\u{2}\u{3} / HTTP/1.1\r\n\r\n".to_owned(),
        "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_owned(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n".to_owned(),
        long_url,
        "POST /v1/assertions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"
            .to_owned(),
        "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"
            .to_owned(),
    ];
    kinds.iter().cycle().take(50).cloned().collect()
}

/// 50 malformed requests must not write 50 ERROR lines: the log holds no ERROR at all and
/// at most one summary WARN, the metric counts them, and the JWKS is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_counted_and_summarised_not_logged_one_error_each() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwksd.toml"), EC_DEFAULT).unwrap();
    let service = crate::process::Service::start(dir.path()).await;
    let (public, private) = (service.public.clone(), service.private.clone());
    let answers = tokio::task::spawn_blocking(move || {
        malformed_requests()
            .iter()
            .enumerate()
            .map(|(i, request)| {
                // Bad chunks go to the listener that reads bodies, everything else to both.
                let addr = if i % 2 == 0 || request.starts_with("POST") {
                    &private
                } else {
                    &public
                };
                exchange(addr, request, Duration::from_secs(3))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (answer, closed) in &answers {
        assert!(closed, "a malformed request kept its connection: {answer}");
        assert!(!answer.starts_with("HTTP/1.1 5"), "{answer}");
    }
    let client = crate::helpers::http_client();
    let jwks = client
        .get(format!("{}/.well-known/jwks.json", service.public))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);

    let summary = |log: &str| {
        log.lines()
            .filter(|l| l.contains("WARN") && l.contains("malformed requests"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while summary(&service.log()) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = service.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "{} ERROR lines for 50 malformed requests, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    assert_eq!(summary(&log), 1, "one summary line:\n{log}");
    let metrics = client
        .get(format!("{}/metrics", service.private))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jwksd_http_protocol_errors_total "))
        .unwrap_or_else(|| panic!("no protocol error counter:\n{metrics}"))
        .parse()
        .unwrap();
    // 7 kinds cycled over 50 requests: the 14 bad chunks reach jwksd's body guard and get
    // its problem; the other 36 are answered by the parser.
    assert_eq!(counted, 36, "protocol errors counted");
    service.stop();
}

/// Sends one complete request, reads its answer, then trickles the head of a second request
/// (a byte every 200 ms) for up to `patience`. Returns whether the server closed the
/// connection, and when.
fn trickle_a_second_head(addr: &str, patience: Duration) -> (bool, Duration) {
    let host = addr.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = stream.read(&mut buffer).unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    let second = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .chain([b'a'; 4096].iter());
    for byte in second {
        if started.elapsed() > patience {
            break;
        }
        if stream.write_all(&[*byte]).is_err() {
            return (true, started.elapsed());
        }
        match stream.read(&mut buffer) {
            Ok(0) => return (true, started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (true, started.elapsed()),
        }
    }
    (false, started.elapsed())
}

/// actix-http times only the first request head of a connection: once a request has been
/// answered and a byte of the next one arrived, nothing limits how slowly the rest of that
/// head may come, so one client could hold every connection slot of the public listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_second_request_head_does_not_hold_the_public_listener() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        &format!("{EC_DEFAULT}[server]\nheader_timeout = \"1s\"\n"),
    )
    .await;
    let public = app.public.clone();
    let (closed, after) =
        tokio::task::spawn_blocking(move || trickle_a_second_head(&public, Duration::from_secs(6)))
            .await
            .unwrap();
    assert!(
        closed && after < Duration::from_secs(3),
        "the public listener held a slowly sent second request head for {after:?} (closed: {closed})"
    );
    app.stop().await;
}

/// The same on the private listener: its request heads come before any authentication, so
/// any client that reaches it could otherwise hold every slot and, with it, signing, tokens
/// and the admin API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_second_request_head_does_not_hold_the_private_listener() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(
        dir.path(),
        &format!("{EC_DEFAULT}[server]\nheader_timeout = \"1s\"\n"),
    )
    .await;
    let private = app.private.clone();
    let (closed, after) = tokio::task::spawn_blocking(move || {
        trickle_a_second_head(&private, Duration::from_secs(6))
    })
    .await
    .unwrap();
    assert!(
        closed && after < Duration::from_secs(3),
        "the private listener held a slowly sent second request head for {after:?} (closed: {closed})"
    );
    app.stop().await;
}

/// A chunked body that never ends, sent with a method the resource does not take: the 405 is
/// rewritten as a problem, and the connection must still close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_request_answered_405_does_not_hold_the_public_listener() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(dir.path(), EC_DEFAULT).await;
    let public = app.public.clone();
    let (answer, closed) = tokio::task::spawn_blocking(move || {
        let post =
            "POST /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        exchange(&public, post, Duration::from_secs(4))
    })
    .await
    .unwrap();
    assert!(
        closed,
        "the public listener kept the connection open: {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    app.stop().await;
}
