#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

//! jwksd's integration tests: one binary, the app spawned in-process on port 0 with a
//! temporary data directory per test.

mod helpers;

mod cli_config;
mod cli_first_day;
mod concurrency;
mod config_errors;
mod deploy;
mod diagnosis;
mod discovered_endpoints;
mod faults;
mod fetchers;
mod hardening;
mod hostile_input;
mod integrity;
mod jwks;
mod lifecycle;
mod logs;
mod metrics;
mod process;
mod reload;
mod replica_faults;
mod replicas;
mod secrecy;
mod signing;
mod startup;
mod status_page;
mod tls;
mod tokens;
mod upstream;
mod upstream_bounds;
