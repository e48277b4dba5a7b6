//! Hardening II: what hostile testing of the release binary found, each class with a test that
//! fails without its fix: unbounded metrics, bodies that never arrive, one address holding every
//! connection or every bcrypt slot, secrets in debug logs, and start-up on a busy port.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::service::{self, Service, embedded_env};
use crate::common::spawn_app;

#[actix_web::test]
async fn start_up_on_a_busy_port_exits_with_one_clear_line_and_no_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = embedded_env(dir.path());
    env.push(("AUTHLOG_BIND".to_owned(), format!("127.0.0.1:{port}")));
    let (status, _, stderr) = service::run(&env, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (AUTHLOG_BIND)")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

/// Methods and paths a client makes up must not become metric series.
#[actix_web::test]
async fn made_up_methods_and_paths_add_no_metric_series() {
    let (app, _log) = spawn_app().await;
    let scrape = || async { app.get("/metrics").await.text().await.expect("text") };
    // Warm up every series a normal request creates.
    assert_eq!(app.get("/nowhere").await.status(), 404);
    assert_eq!(app.get("/metrics").await.status(), 200);
    let before = scrape().await;
    for i in 0..200 {
        let long = "X".repeat(1000);
        for method in [format!("INVENTED{i}"), format!("{long}{i}")] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a token");
            let path = format!("/made/up/{i}");
            for url in [app.url("/signup"), app.url(&path)] {
                let status = app
                    .http
                    .request(method.clone(), url)
                    .send()
                    .await
                    .expect("sent")
                    .status();
                assert!([404, 405].contains(&status.as_u16()), "{status}");
            }
        }
    }
    let after = scrape().await;
    assert!(
        !after.contains("INVENTED"),
        "a made-up method became a label"
    );
    assert!(!after.contains("/made/up"), "a made-up path became a label");
    assert!(after.contains(r#"method="other""#), "{after}");
    assert!(after.contains(r#"route="unmatched""#), "{after}");
    // A handful of new series (method `other` on two routes), not hundreds.
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        series(&after) <= series(&before) + 40,
        "{} series before, {} after",
        series(&before),
        series(&after)
    );
}

/// Writes `request` on a new connection from `from` and returns what comes back before the
/// server closes it (or `wait` passes), and how long that took.
async fn exchange(
    address: &str,
    from: [u8; 4],
    request: &[u8],
    wait: Duration,
) -> (String, Duration) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind the client address");
    let mut stream = socket
        .connect(address.parse().expect("address"))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let started = Instant::now();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut reply)).await;
    (
        String::from_utf8_lossy(&reply).into_owned(),
        started.elapsed(),
    )
}

#[actix_web::test]
async fn a_body_that_never_arrives_gets_408_and_its_connection_is_closed() {
    let (app, _log) = spawn_app().await;
    let address = format!("127.0.0.1:{}", app.port);
    let heads = [
        "POST /signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n",
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"em",
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nusern\r\n",
    ];
    let exchanges = heads.iter().map(|head| {
        exchange(
            &address,
            [127, 0, 0, 1],
            head.as_bytes(),
            Duration::from_secs(30),
        )
    });
    for (reply, took) in futures_util::future::join_all(exchanges).await {
        assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
        assert!(
            reply.contains(r#"{"detail":"Request body not received within 10 seconds"}"#),
            "{reply}"
        );
        assert!(reply.contains("nosniff"), "{reply}");
        // Closed by the server after the reply: read_to_end returned before the 30 s.
        assert!(took < Duration::from_secs(25), "{took:?}");
    }
}

#[actix_web::test]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = embedded_env(dir.path());
    env.push((
        "AUTHLOG_MAX_CONNECTIONS_PER_ADDRESS".to_owned(),
        "8".to_owned(),
    ));
    let service = Service::start(&env);
    let address = service.socket_address();
    let live = b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n";
    // Eight idle keep-alive connections from one address: all served.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect");
        stream.write_all(live).await.expect("write");
        let mut buffer = [0u8; 512];
        let read = stream.read(&mut buffer).await.expect("read");
        assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    // The ninth from that address is refused and closed; another address is served.
    let close = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (reply, _) = exchange(&address, [127, 0, 0, 1], close, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    assert!(
        reply
            .contains(r#"{"detail":"Too many connections from this address; retry in 1 seconds"}"#),
        "{reply}"
    );
    let (reply, _) = exchange(&address, [127, 0, 0, 2], close, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // Closing frees the places.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (reply, _) = exchange(&address, [127, 0, 0, 1], close, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

#[actix_web::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let command = service::command_under(
        "prlimit",
        &["--nofile=256:4096", "--"],
        &embedded_env(dir.path()),
    );
    let service = Service::spawn(command);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", service.pid()))
        .expect("the service's limits");
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{open_files}");
    assert!(
        service
            .log_lines()
            .iter()
            .any(|line| line.contains("open-file limit") && line.contains("4096")),
        "{:?}",
        service.log_lines()
    );
}
