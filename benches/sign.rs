#![allow(clippy::expect_used)] // a benchmark aborts loudly on any failure

//! Signing throughput through the real HTTP endpoint, against the raw signing speed of the
//! same key type on one core, measured in the same run.
//!
//! Run with `scripts/bench-sign` (or `cargo bench --bench sign`). It starts the release
//! `jwksd` binary with a RS384-2048 key set and the durable audit trail on, drives
//! `POST /v1/assertions` from concurrent clients (a new connection per request: the private
//! listener closes each after one answer), then signs the same kind of
//! message in a loop on one thread, and prints both rates and their ratio. The goal is a
//! ratio of at least 0.8: HTTP, JSON and the audit trail should cost little next to RSA.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jwksd::keys::{Algorithm, KeyMaterial, RsaBits};

const CALLER_TOKEN: &str = "bench-caller-token-0123456789abcdefghijklmnop";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18181)
}

/// Single-threaded RS384-2048 signatures per second over an assertion-sized message.
fn raw_signing_rate(seconds: u64) -> f64 {
    let key = KeyMaterial::generate(Algorithm::Rs384, RsaBits::B2048).expect("key generation");
    let message = vec![b'a'; 330];
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..50 {
            key.sign_jws(&message).expect("signing");
        }
        count += 50;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds = env_or("BENCH_SECONDS", 5);
    let connections = env_or("BENCH_CONNECTIONS", 32);
    let dir = tempfile::tempdir().expect("temp dir");
    let hash = hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, CALLER_TOKEN.as_bytes()).as_ref(),
    );
    std::fs::write(
        dir.path().join("jwksd.toml"),
        format!(
            r#"
[keysets.default]
alg = "RS384"
[clients.bench]
client_id = "bench-client"
token_endpoint = "https://ehr.example.org/oauth2/token"
[callers.bench]
token_sha256 = "{hash}"
clients = ["bench"]
rate_limit_per_minute = 100000000
"#
        ),
    )
    .expect("config");
    let (public_port, private_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_jwksd"))
        .args(["serve", "--config", "jwksd.toml"])
        .current_dir(dir.path())
        .env(
            "JWKSD_SERVER__PUBLIC_LISTEN",
            format!("127.0.0.1:{public_port}"),
        )
        .env(
            "JWKSD_SERVER__PRIVATE_LISTEN",
            format!("127.0.0.1:{private_port}"),
        )
        .env("JWKSD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start jwksd");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (http_rate, latencies) = runtime.block_on(async {
        jwksd::tokens::install_crypto_provider();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(connections as usize)
            .build()
            .expect("client");
        let ready = format!("http://127.0.0.1:{public_port}/readyz");
        for _ in 0..600 {
            if http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = format!("http://127.0.0.1:{private_port}/v1/assertions");
        let body = br#"{"client_id":"bench-client"}"#.to_vec();
        let done = Arc::new(AtomicU64::new(0));
        let warmup = Instant::now() + Duration::from_secs(1);
        let end = warmup + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (http, url, body, done) = (http.clone(), url.clone(), body.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let response = http
                        .post(&url)
                        .bearer_auth(CALLER_TOKEN)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(response.status(), 200, "signing failed");
                    let _ = response.bytes().await.expect("body");
                    if sent >= warmup {
                        done.fetch_add(1, Ordering::Relaxed);
                        latencies.push(sent.elapsed());
                    }
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("task"));
        }
        (
            done.load(Ordering::Relaxed) as f64 / seconds as f64,
            latencies,
        )
    });
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();

    let raw_rate = raw_signing_rate(seconds);
    let mut latencies = latencies;
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!("jwksd signing benchmark (RS384-2048, audit on, {connections} connections, {seconds}s each)");
    println!("  raw signing, 1 core:        {raw_rate:>8.0} signatures/s");
    println!(
        "  POST /v1/assertions (HTTP): {http_rate:>8.0} assertions/s   p50 {:.2} ms  p99 {:.2} ms",
        percentile(0.5),
        percentile(0.99)
    );
    println!(
        "  ratio HTTP / raw:           {:>8.2}   (goal >= 0.80)",
        http_rate / raw_rate
    );
    if let Some(openssl) = openssl_rate(seconds) {
        println!("  for reference, openssl speed rsa2048: {openssl:.0} signatures/s");
    }
}

/// `openssl speed rsa2048` on this machine, when the openssl tool is installed.
fn openssl_rate(seconds: u64) -> Option<f64> {
    let output = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "rsa2048"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().find(|l| l.starts_with("rsa 2048 bits"))?;
    line.split_whitespace().nth(5)?.parse().ok()
}
