//! The status page on the private listener (`GET /`): server-rendered HTML for the people
//! who run jwksd, behind the admin token, with no script.
//!
//! It owns the login form and its session cookie ([`session`]: MAC'd under the master key,
//! valid on every replica, 8 h, bound to the admin token), the CSRF rules of its forms
//! (the session's token in a hidden field, an Origin / `Sec-Fetch-Site` check, and the
//! `SameSite=Strict` cookie), its security headers, what it shows ([`view`]) and how
//! ([`html`]). Rotate and revoke go through the keyring, as the admin API's do, and are
//! recorded in the audit trail with the admin as actor.
//!
//! Routes: `GET /`, `POST /status/login`, `POST /status/logout`,
//! `GET|POST /status/keysets/{keyset}/rotate` (confirmation, then the rotation),
//! `GET|POST /status/keys/{kid}/revoke`, `GET /status/style.css`. Refusals are HTML pages
//! for a person, with the status and kind of the one problem table
//! ([`super::problem::ProblemKind`]), and are recorded among the recent refusals.

mod html;
mod session;
pub mod view;

use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::problem::{HtmlRefusal, Problem, ProblemKind};
use super::state::{State, TokenHash};
use crate::config::is_valid_keyset_name;
use crate::keyring::Via;
use crate::rotation::UnixTime;
use session::Session;

pub use view::FetcherView;

/// Login attempts a client address may make per minute (bursts of 3): enough for a typo
/// or two, far too few to matter against a token of 32 characters or more.
const LOGIN_ATTEMPTS_PER_MINUTE: u32 = 30;

/// The policy the page's answers carry: nothing but its own stylesheet, no script, no
/// frames, forms only to itself.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").get(index))
        .service(web::resource("/status/style.css").get(stylesheet))
        .service(web::resource("/status/login").post(login))
        .service(web::resource("/status/logout").post(logout))
        .service(
            web::resource("/status/keysets/{keyset}/rotate")
                .get(confirm_rotate)
                .post(rotate),
        )
        .service(
            web::resource("/status/keys/{kid}/revoke")
                .get(confirm_revoke)
                .post(revoke),
        );
}

/// The MAC the sessions are made with: the keyring's, under the master key.
fn mac(state: &State) -> impl Fn(&str, &[u8]) -> Vec<u8> + '_ {
    move |purpose, data| state.keyring.master_mac(purpose, data)
}

/// An HTML answer with the page's security headers.
fn page(status: StatusCode, body: String) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    secure_headers(&mut response);
    response.content_type("text/html; charset=utf-8").body(body)
}

fn secure_headers(response: &mut actix_web::HttpResponseBuilder) {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        .insert_header(("Cross-Origin-Resource-Policy", "same-origin"));
}

/// A refusal as an HTML page with the problem's status, `Retry-After` and kind.
fn refused(problem: &Problem, csrf: Option<&str>) -> HttpResponse {
    let mut response = page(
        problem.status(),
        html::refusal_page(problem.kind.title(), &problem.detail, csrf),
    );
    mark_refusal(&mut response, problem);
    response
}

fn mark_refusal(response: &mut HttpResponse, problem: &Problem) {
    if let Some(seconds) = problem.retry_after {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response.extensions_mut().insert(HtmlRefusal(problem.kind));
}

/// The session the request's cookie carries, if it verifies and was not logged out here.
fn session_of(req: &HttpRequest, state: &State, now: UnixTime) -> Option<Session> {
    let cookies = req.headers().get(header::COOKIE)?.to_str().ok()?;
    let value = session::cookie_value(cookies)?;
    let session = session::verify(&mac(state), state.admin_token.digest(), value, now)?;
    let logged_out = match state.status_logouts.lock() {
        Ok(guard) => guard.contains_key(&session.nonce),
        Err(poisoned) => poisoned.into_inner().contains_key(&session.nonce),
    };
    (!logged_out).then_some(session)
}

/// Whether a form was sent by this page itself. `Sec-Fetch-Site`, which every current
/// browser sends, decides when present: it must say same-origin (or none: typed by the
/// user). Otherwise `Origin`, when present, must name the host the request was sent to.
/// (Under `Referrer-Policy: no-referrer` a browser sends `Origin: null` even on the page's
/// own form posts, so `Origin` alone cannot decide.) A request with neither (not a browser)
/// still needs the CSRF token.
fn same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    // "null" (a sandboxed or file page) and any other scheme are not this page.
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// Whether the request reached this page over plain HTTP on a host that is not loopback,
/// where the browser will not keep the Secure session cookie.
fn plain_http_beyond_loopback(req: &HttpRequest) -> bool {
    if req.connection_info().scheme() == "https" {
        return false;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// The fields of a form body (`application/x-www-form-urlencoded`).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn login_form(req: &HttpRequest, status: StatusCode, error: Option<&str>) -> HttpResponse {
    page(
        status,
        html::login_page(error, plain_http_beyond_loopback(req)),
    )
}

/// The checks of every form that changes something, in order: it comes from this page
/// (403), within a session (401: the login form), carrying the session's CSRF token (403).
// The refusal is the answer itself, built once per refused form: its size costs nothing.
#[allow(clippy::result_large_err)]
fn guard_form(
    req: &HttpRequest,
    state: &State,
    body: &[u8],
    now: UnixTime,
) -> Result<Session, HttpResponse> {
    if !same_origin(req) {
        return Err(refused(
            &Problem::new(
                ProblemKind::CsrfRejected,
                "this form was sent from another site; nothing was changed",
            ),
            None,
        ));
    }
    let Some(session) = session_of(req, state, now) else {
        let mut response = login_form(
            req,
            StatusCode::UNAUTHORIZED,
            Some("Your session has ended; sign in again. Nothing was changed."),
        );
        mark_refusal(
            &mut response,
            &Problem::new(ProblemKind::Unauthorized, "no session"),
        );
        return Err(response);
    };
    let presented = form_field(body, "csrf").unwrap_or_default();
    if !session::csrf_matches(&mac(state), &session, &presented) {
        let csrf = session::csrf_token(&mac(state), &session);
        return Err(refused(
            &Problem::new(
                ProblemKind::CsrfRejected,
                "the form did not carry this session's CSRF token (reload the page and try \
                 again); nothing was changed",
            ),
            Some(&csrf),
        ));
    }
    Ok(session)
}

async fn stylesheet() -> HttpResponse {
    let mut response = HttpResponse::Ok();
    secure_headers(&mut response);
    response
        .content_type("text/css; charset=utf-8")
        .body(include_str!("style.css"))
}

async fn index(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let now = crate::unix_now();
    let Some(session) = session_of(&req, &state, now) else {
        return login_form(&req, StatusCode::OK, None);
    };
    let csrf = session::csrf_token(&mac(&state), &session);
    let snapshot = state.keyring.snapshot();
    let activity = view::day_activity(state.keyring.store().as_ref(), now).await;
    let (activity, activity_error) = match activity {
        Ok(activity) => (activity, None),
        Err(e) => {
            tracing::warn!(error = %e, "status page: the audit trail could not be read");
            (
                view::DayActivity::default(),
                Some("The audit trail cannot be read right now (the server log has the cause)."),
            )
        }
    };
    let base = state.public_url.as_str();
    let mut fetchers = std::collections::HashMap::new();
    let mut schedules = std::collections::HashMap::new();
    for name in snapshot.keysets.keys() {
        fetchers.insert(name.clone(), fetchers_of(&state, name).await);
        let schedule = match state.keyring.schedule(name, now).await {
            Ok(schedule) => Some(schedule),
            Err(e) => {
                tracing::warn!(keyset = %name, error = %e, "status page: the schedule could not be read");
                None
            }
        };
        schedules.insert(name.clone(), schedule);
    }
    let keysets = snapshot
        .keysets
        .values()
        .map(|v| html::KeysetPanel {
            name: &v.config.name,
            alg: v.config.alg.as_str(),
            jwks_url: format!("{base}/jwks/{}.json", v.config.name),
            timing: v.config.timing,
            records: &v.records,
            schedule: schedules.remove(&v.config.name).flatten(),
            fetchers: fetchers.remove(&v.config.name).flatten(),
            activity: activity.by_keyset.get(&v.config.name).cloned(),
        })
        .collect();
    let body = html::status_page(&html::StatusPage {
        now,
        csrf: &csrf,
        keysets,
        activity_error,
        activity_truncated: activity.truncated,
        public_url_set: !base.is_empty(),
        refusals: state.refusals.newest_first(),
    });
    page(StatusCode::OK, body)
}

/// The address a sign-in attempt is counted against: an IPv4 address, or an IPv6 /64.
fn login_source(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

async fn login(req: HttpRequest, state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let now = crate::unix_now();
    if !same_origin(&req) {
        return refused(
            &Problem::new(
                ProblemKind::CsrfRejected,
                "the login form was sent from another site",
            ),
            None,
        );
    }
    // Every attempt counts, right or wrong, per client address (not X-Forwarded-For: a
    // client could name any address there); an IPv6 client per /64, the block one host is
    // usually given.
    let client = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| login_source(a.ip()));
    if let Err(retry_after) = state.limiter.check(
        &format!("status-login/{client}"),
        LOGIN_ATTEMPTS_PER_MINUTE,
        Instant::now(),
    ) {
        let mut problem = Problem::new(
            ProblemKind::RateLimited,
            format!(
                "too many sign-in attempts from this address; wait {retry_after} s and try again"
            ),
        );
        problem.retry_after = Some(retry_after as i64);
        let mut response = login_form(&req, StatusCode::TOO_MANY_REQUESTS, Some(&problem.detail));
        mark_refusal(&mut response, &problem);
        return response;
    }
    let token = form_field(&body, "token").unwrap_or_default();
    if token.is_empty() || !state.admin_token.matches(&TokenHash::of(token.trim())) {
        let mut response = login_form(
            &req,
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token. Nothing was stored."),
        );
        mark_refusal(
            &mut response,
            &Problem::new(ProblemKind::Unauthorized, "wrong admin token"),
        );
        return response;
    }
    let (session, value) = session::issue(&mac(&state), state.admin_token.digest(), now);
    tracing::info!("status page: admin signed in");
    let mut response = HttpResponse::SeeOther();
    secure_headers(&mut response);
    response
        .insert_header((header::LOCATION, "/"))
        .insert_header((
            header::SET_COOKIE,
            session::set_cookie(&value, &session, now),
        ))
        .finish()
}

async fn logout(req: HttpRequest, state: web::Data<State>, body: web::Bytes) -> HttpResponse {
    let now = crate::unix_now();
    let session = match guard_form(&req, &state, &body, now) {
        Ok(session) => session,
        Err(response) => return response,
    };
    {
        let mut logouts = match state.status_logouts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Bounded by the sessions of the last 8 h: expired ones are dropped here.
        logouts.retain(|_, expires_at| *expires_at > now);
        logouts.insert(session.nonce, session.expires_at);
    }
    let mut response = HttpResponse::SeeOther();
    secure_headers(&mut response);
    response
        .insert_header((header::LOCATION, "/"))
        .insert_header((header::SET_COOKIE, session::clear_cookie()))
        .finish()
}

/// The key set `name` of the snapshot, or the problem for a name that is not one.
/// The recorded fetchers of `keyset` as the page shows them; `None` (and a log line) when
/// the record cannot be read.
async fn fetchers_of(state: &State, keyset: &str) -> Option<Vec<view::FetcherView>> {
    match state.fetchers.fetchers(keyset).await {
        Ok(fetchers) => Some(view::fetcher_views(&fetchers)),
        Err(e) => {
            tracing::warn!(keyset, error = %e, "status page: the fetcher record could not be read");
            None
        }
    }
}

fn unknown_keyset(name: &str) -> Problem {
    if is_valid_keyset_name(name) {
        Problem::from(crate::error::Error::UnknownKeyset(name.to_owned()))
    } else {
        Problem::not_found("no key set by that name is configured")
    }
}

async fn confirm_rotate(
    req: HttpRequest,
    state: web::Data<State>,
    keyset: web::Path<String>,
) -> HttpResponse {
    let now = crate::unix_now();
    let Some(session) = session_of(&req, &state, now) else {
        return see_other("/");
    };
    let csrf = session::csrf_token(&mac(&state), &session);
    let snapshot = state.keyring.snapshot();
    let Some(view) = snapshot.keysets.get(keyset.as_str()) else {
        return refused(&unknown_keyset(&keyset), Some(&csrf));
    };
    let fetchers = fetchers_of(&state, &view.config.name).await;
    match view::rotate_consequence(&view.records, &view.config.timing, fetchers.as_deref(), now) {
        Some(consequence) => page(
            StatusCode::OK,
            html::confirm_rotate(&view.config.name, &consequence, &csrf),
        ),
        None => refused(
            &Problem::from(crate::error::Error::NoNextKey(view.config.name.clone())),
            Some(&csrf),
        ),
    }
}

async fn rotate(
    req: HttpRequest,
    state: web::Data<State>,
    keyset: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let now = crate::unix_now();
    let session = match guard_form(&req, &state, &body, now) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let csrf = session::csrf_token(&mac(&state), &session);
    if !state.keyring.configs().contains_key(keyset.as_str()) {
        return refused(&unknown_keyset(&keyset), Some(&csrf));
    }
    // The force the confirmation stated: an unforced confirmation never rotates by force,
    // even if the key set changed since (the keyring then refuses with 409).
    let force = form_field(&body, "force").as_deref() == Some("true");
    let keyring = state.keyring.clone();
    let name = keyset.into_inner();
    // In its own task, as the admin API's rotation: a client that hangs up must not cancel
    // a change between its commit and the new snapshot.
    let outcome = tokio::spawn(async move {
        keyring
            .rotate_via(&name, force, crate::unix_now(), Via::StatusPage)
            .await
    })
    .await
    .map_err(|e| crate::error::Error::Task(e.to_string()))
    .and_then(|r| r);
    match outcome {
        Ok(o) => page(
            StatusCode::OK,
            html::outcome(
                &format!("Rotated {}", o.keyset),
                &[
                    ("Signs from now on", Some(&o.promoted)),
                    ("Retired", o.retired.as_deref()),
                    ("New next key", o.new_next.as_deref()),
                ],
                o.warning.as_deref(),
                &csrf,
            ),
        ),
        Err(e) => refused(&Problem::from(e), Some(&csrf)),
    }
}

/// The published key `kid` and its key set's view, from the snapshot.
fn published_key<'a>(
    snapshot: &'a crate::keyring::Snapshot,
    kid: &str,
) -> Option<&'a crate::keyring::KeysetView> {
    snapshot
        .keysets
        .values()
        .find(|v| v.records.iter().any(|r| r.kid == kid))
}

async fn confirm_revoke(
    req: HttpRequest,
    state: web::Data<State>,
    kid: web::Path<String>,
) -> HttpResponse {
    let now = crate::unix_now();
    let Some(session) = session_of(&req, &state, now) else {
        return see_other("/");
    };
    let csrf = session::csrf_token(&mac(&state), &session);
    let snapshot = state.keyring.snapshot();
    let Some(view) = published_key(&snapshot, &kid) else {
        return refused(
            &Problem::from(crate::error::Error::UnknownKid(
                "(not in any key set)".into(),
            )),
            Some(&csrf),
        );
    };
    match view::revoke_consequence(&view.records, &view.config.timing, &kid, now) {
        Some(sentences) => page(
            StatusCode::OK,
            html::confirm_revoke(&kid, &sentences, &csrf),
        ),
        None => refused(
            &Problem::new(
                ProblemKind::NotRevocable,
                "this key is no longer published: there is nothing to revoke",
            ),
            Some(&csrf),
        ),
    }
}

async fn revoke(
    req: HttpRequest,
    state: web::Data<State>,
    kid: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let now = crate::unix_now();
    let session = match guard_form(&req, &state, &body, now) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let csrf = session::csrf_token(&mac(&state), &session);
    if kid.len() > 64 {
        return refused(
            &Problem::from(crate::error::Error::UnknownKid("(too long)".into())),
            Some(&csrf),
        );
    }
    let reason = form_field(&body, "reason")
        .map(|r| r.trim().chars().take(500).collect::<String>())
        .filter(|r| !r.is_empty());
    let keyring = state.keyring.clone();
    let kid = kid.into_inner();
    // In its own task, as the admin API's revocation.
    let outcome = tokio::spawn(async move {
        keyring
            .revoke_via(&kid, reason.as_deref(), crate::unix_now(), Via::StatusPage)
            .await
    })
    .await
    .map_err(|e| crate::error::Error::Task(e.to_string()))
    .and_then(|r| r);
    match outcome {
        Ok(o) => page(
            StatusCode::OK,
            html::outcome(
                &format!("Revoked a key of {}", o.keyset),
                &[
                    ("Revoked", Some(&o.revoked)),
                    ("Signs from now on", o.promoted.as_deref()),
                    ("New next key", o.new_next.as_deref()),
                ],
                o.warning.as_deref(),
                &csrf,
            ),
        ),
        Err(e) => refused(&Problem::from(e), Some(&csrf)),
    }
}

fn see_other(location: &'static str) -> HttpResponse {
    let mut response = HttpResponse::SeeOther();
    secure_headers(&mut response);
    response
        .insert_header((header::LOCATION, location))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn sign_in_attempts_from_one_ipv6_block_count_together() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(login_source(ip("192.0.2.7")), "192.0.2.7");
        assert_eq!(login_source(ip("::ffff:192.0.2.7")), "192.0.2.7");
        assert_eq!(
            login_source(ip("2001:db8:1:2:aaaa::1")),
            login_source(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_ne!(
            login_source(ip("2001:db8:1:2::1")),
            login_source(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn a_form_from_another_origin_is_not_this_page() {
        let from = |origin: Option<&str>, site: Option<&str>| {
            let mut req = TestRequest::post().insert_header((header::HOST, "127.0.0.1:8081"));
            if let Some(origin) = origin {
                req = req.insert_header((header::ORIGIN, origin));
            }
            if let Some(site) = site {
                req = req.insert_header(("sec-fetch-site", site));
            }
            same_origin(&req.to_http_request())
        };
        assert!(from(Some("http://127.0.0.1:8081"), Some("same-origin")));
        assert!(from(None, None), "no browser: the CSRF token decides");
        assert!(!from(Some("http://127.0.0.1:9999"), None));
        assert!(!from(Some("http://evil.example"), None));
        assert!(!from(Some("null"), None));
        assert!(!from(None, Some("same-site")));
        assert!(!from(Some("http://127.0.0.1:8081"), Some("cross-site")));
        // A browser's own form post under no-referrer: Origin null, same-origin fetch.
        assert!(from(Some("null"), Some("same-origin")));
    }

    #[test]
    fn plain_http_is_flagged_beyond_loopback_only() {
        let on = |host: &str| {
            plain_http_beyond_loopback(
                &TestRequest::get()
                    .insert_header((header::HOST, host))
                    .to_http_request(),
            )
        };
        assert!(!on("127.0.0.1:8081"));
        assert!(!on("localhost:8081"));
        assert!(!on("[::1]:8081"));
        assert!(on("10.1.2.3:8081"));
        assert!(on("jwksd.internal"));
    }
}
