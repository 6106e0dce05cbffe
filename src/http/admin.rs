//! The admin API on the private listener: key sets and keys, rotate, revoke, clients, the
//! audit trail, a key set's JWKS, and the uncached token check behind `jwksd doctor`.
//!
//! Every handler takes an [`AdminAuth`], so an unauthenticated request never reaches one.
//! Mutations answer only after the store has committed (SQLite `synchronous=FULL`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::auth::AdminAuth;
use super::body::{optional_json, parse_query};
use super::problem::{Problem, ProblemKind};
use super::state::State;
use crate::api::{
    AuditEntry, AuditPage, AuditQuery, ClientInfo, ClientList, FetcherInfo, FetcherList, GateState,
    KeyInfo, KeyList, KeysetInfo, KeysetList, Revocation, RevokeRequest, RotateQuery,
    RotateRequest, Rotation, RotationGate, Schedule, ServedKidInfo, TokenCheck, TokenCheckFailed,
    TokenCheckPassed, TokenCheckRequest,
};
use crate::config::is_valid_keyset_name;
use crate::keyring::{KeysetSchedule, KeysetView, RevocationOutcome, RotationOutcome, Snapshot};
use crate::rotation::{GateStatus, KeyRecord, KeyState};
use crate::tokens::{TokenContext, TokenError};

/// Largest body the admin API reads (its bodies are a few optional flags).
const BODY_LIMIT: usize = 4096;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/v1")
            .service(web::resource("/keysets").get(list_keysets))
            .service(web::resource("/keysets/{keyset}/keys").get(list_keys))
            .service(web::resource("/keysets/{keyset}/fetchers").get(list_fetchers))
            .service(web::resource("/keysets/{keyset}/rotate").post(rotate))
            .service(web::resource("/keys/{kid}/revoke").post(revoke))
            .service(web::resource("/keysets/{keyset}/jwks").get(keyset_jwks))
            .service(web::resource("/clients").get(list_clients))
            .service(web::resource("/audit").get(audit))
            .service(web::resource("/clients/{client}/token-check").post(token_check)),
    );
}

fn api_state(state: KeyState) -> crate::api::KeyState {
    match state {
        KeyState::Next => crate::api::KeyState::Next,
        KeyState::Current => crate::api::KeyState::Current,
        KeyState::Retired => crate::api::KeyState::Retired,
        KeyState::Removed => crate::api::KeyState::Removed,
        KeyState::Revoked => crate::api::KeyState::Revoked,
    }
}

/// A key as the admin API shows it.
fn key_info(r: &KeyRecord, public_base: &str) -> KeyInfo {
    KeyInfo {
        kid: r.kid.clone(),
        keyset: r.keyset.clone(),
        alg: r.alg.as_str().to_owned(),
        state: api_state(r.state),
        created_at: crate::rfc3339(r.created_at),
        published_at: crate::rfc3339(r.published_at),
        activated_at: r.activated_at.and_then(crate::rfc3339),
        retired_at: r.retired_at.and_then(crate::rfc3339),
        remove_at: r.remove_at.and_then(crate::rfc3339),
        revoked_at: r.revoked_at.and_then(crate::rfc3339),
        certificate_url: r
            .state
            .is_published()
            .then(|| format!("{public_base}/certs/{}.pem", r.kid)),
    }
}

fn valid_keyset(name: &str) -> Result<&str, Problem> {
    if is_valid_keyset_name(name) {
        Ok(name)
    } else {
        Err(Problem::new(
            ProblemKind::UnknownKeyset,
            "no key set by that name is configured",
        ))
    }
}

/// The served key set `name`: 404 for a name that is not one.
fn keyset_view<'a>(snapshot: &'a Snapshot, name: &str) -> Result<&'a KeysetView, Problem> {
    let name = valid_keyset(name)?;
    snapshot
        .keysets
        .get(name)
        .ok_or_else(|| Problem::from(crate::error::Error::UnknownKeyset(name.to_owned())))
}

/// A key set's schedule as the admin API shows it.
fn schedule(s: KeysetSchedule) -> Schedule {
    let names =
        |unseen: Vec<crate::rotation::Unseen>| unseen.into_iter().map(|u| u.fetcher).collect();
    let (state, deadline, unseen_by) = match s.gate {
        GateStatus::Off => (GateState::Off, None, Vec::new()),
        GateStatus::NotDue { unseen, .. } => (GateState::NotDue, None, names(unseen)),
        GateStatus::Satisfied { .. } => (GateState::Satisfied, None, Vec::new()),
        GateStatus::Waiting {
            deadline, unseen, ..
        } => (GateState::Waiting, Some(deadline), names(unseen)),
        GateStatus::DeadlinePassed {
            deadline, unseen, ..
        } => (GateState::DeadlinePassed, Some(deadline), names(unseen)),
    };
    Schedule {
        next_rotation_at: s.next_rotation_at.and_then(crate::rfc3339),
        next_removal_at: s.next_removal_at.and_then(crate::rfc3339),
        rotation_gate: RotationGate {
            state,
            deadline_at: deadline.and_then(crate::rfc3339),
            unseen_by,
        },
    }
}

async fn keyset_schedule(state: &State, keyset: &str) -> Result<Schedule, Problem> {
    Ok(schedule(
        state.keyring.schedule(keyset, crate::unix_now()).await?,
    ))
}

async fn list_keysets(_: AdminAuth, state: web::Data<State>) -> Result<HttpResponse, Problem> {
    let snapshot = state.keyring.snapshot();
    let base = state.public_url.as_str();
    let mut schedules = std::collections::BTreeMap::new();
    for name in snapshot.keysets.keys() {
        schedules.insert(name.clone(), keyset_schedule(&state, name).await?);
    }
    let keysets = snapshot
        .keysets
        .values()
        .map(|view| {
            let c = &view.config;
            let of_state = |s: KeyState| {
                view.records
                    .iter()
                    .filter(|r| r.state == s)
                    .map(|r| r.kid.clone())
                    .next_back()
            };
            KeysetInfo {
                name: c.name.clone(),
                alg: c.alg.as_str().to_owned(),
                rsa_bits: matches!(c.alg.family(), crate::keys::KeyFamily::Rsa)
                    .then(|| c.rsa_bits.bits()),
                rotation_period_seconds: c.timing.rotation_period,
                jwks_max_age_seconds: c.timing.jwks_max_age,
                prepublish_seconds: c.timing.prepublish,
                retire_grace_seconds: c.timing.retire_grace,
                cert_subject: c.cert_subject.clone(),
                jwks_url: format!("{base}/jwks/{}.json", c.name),
                current_kid: of_state(KeyState::Current),
                next_kid: of_state(KeyState::Next),
                rotation_requires_fetch: c.fetch_gate.requires_fetch,
                fetcher_window_seconds: c.fetch_gate.fetcher_window,
                rotation_deadline_seconds: c.fetch_gate.rotation_deadline,
                schedule: schedules.remove(&c.name),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(KeysetList { keysets }))
}

async fn list_keys(
    _: AdminAuth,
    state: web::Data<State>,
    keyset: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let snapshot = state.keyring.snapshot();
    let view = keyset_view(&snapshot, &keyset)?;
    let base = state.public_url.as_str();
    let keys = view
        .records
        .iter()
        .rev()
        .map(|r| key_info(r, base))
        .collect();
    let schedule = Some(keyset_schedule(&state, &view.config.name).await?);
    Ok(HttpResponse::Ok().json(KeyList { keys, schedule }))
}

/// Who fetched the key set's JWKS (every replica's, from the store), most recent first.
async fn list_fetchers(
    _: AdminAuth,
    state: web::Data<State>,
    keyset: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let snapshot = state.keyring.snapshot();
    let view = keyset_view(&snapshot, &keyset)?;
    let name = view.config.name.clone();
    let state_of = |kid: &str| {
        view.records
            .iter()
            .find(|r| r.kid == kid)
            .map(|r| api_state(r.state))
    };
    let kid_in = |s: KeyState| {
        view.records
            .iter()
            .rfind(|r| r.state == s)
            .map(|r| r.kid.clone())
    };
    let (current, next) = (kid_in(KeyState::Current), kid_in(KeyState::Next));
    let fetchers = state
        .fetchers
        .fetchers(&name)
        .await?
        .into_iter()
        .map(|f| {
            let served = |kid: &Option<String>| {
                kid.as_ref()
                    .is_some_and(|kid| f.kids.iter().any(|k| &k.kid == kid))
            };
            FetcherInfo {
                seen_current: served(&current),
                seen_next: served(&next),
                first_seen: crate::rfc3339(f.first_seen),
                last_seen: crate::rfc3339(f.last_seen),
                kids: f
                    .kids
                    .iter()
                    .map(|k| ServedKidInfo {
                        kid: k.kid.clone(),
                        first_served: crate::rfc3339(k.first_served),
                        last_served: crate::rfc3339(k.last_served),
                        state: state_of(&k.kid),
                    })
                    .collect(),
                user_agent: f.user_agent,
                network: f.network,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(FetcherList {
        keyset: name,
        fetchers,
    }))
}

/// The body of an admin request: none (or only whitespace) means the defaults; otherwise a
/// JSON object of at most [`BODY_LIMIT`] bytes, refused as the body module refuses it.
fn admin_body<T: serde::de::DeserializeOwned + Default>(
    req: &HttpRequest,
    body: &[u8],
) -> Result<T, Problem> {
    Ok(optional_json(req, body, "admin", BODY_LIMIT)?)
}

fn rotation(o: RotationOutcome) -> Rotation {
    Rotation {
        keyset: o.keyset,
        promoted: o.promoted,
        retired: o.retired,
        new_next: o.new_next,
        forced: o.forced,
        warning: o.warning,
        unseen_by: o.unseen_by,
    }
}

fn revocation(o: RevocationOutcome) -> Revocation {
    Revocation {
        keyset: o.keyset,
        revoked: o.revoked,
        promoted: o.promoted,
        new_next: o.new_next,
        warning: o.warning,
    }
}

async fn rotate(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<State>,
    keyset: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let name = valid_keyset(&keyset)?;
    let query: RotateQuery = parse_query(req.query_string())?;
    let body: RotateRequest = admin_body(&req, &body)?;
    let force = query.force || body.force;
    let keyring = state.keyring.clone();
    let name = name.to_owned();
    // In its own task: a client that hangs up must not cancel a change between its commit
    // and the new snapshot.
    let outcome =
        tokio::spawn(async move { keyring.rotate(&name, force, crate::unix_now()).await })
            .await
            .map_err(|e| crate::error::Error::Task(e.to_string()))??;
    Ok(HttpResponse::Ok().json(rotation(outcome)))
}

async fn revoke(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<State>,
    kid: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let body: RevokeRequest = admin_body(&req, &body)?;
    if kid.len() > 64 {
        return Err(Problem::from(crate::error::Error::UnknownKid(
            "(too long)".into(),
        )));
    }
    let reason: Option<String> = body.reason.map(|r| r.chars().take(500).collect());
    let keyring = state.keyring.clone();
    let kid = kid.into_inner();
    // In its own task, as rotation is.
    let outcome = tokio::spawn(async move {
        keyring
            .revoke(&kid, reason.as_deref(), crate::unix_now())
            .await
    })
    .await
    .map_err(|e| crate::error::Error::Task(e.to_string()))??;
    Ok(HttpResponse::Ok().json(revocation(outcome)))
}

/// Most records one page returns.
const AUDIT_PAGE_MAX: u32 = 1000;

async fn audit(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, Problem> {
    let query: AuditQuery = parse_query(req.query_string())?;
    let since = match &query.since {
        None => None,
        Some(text) => Some(
            OffsetDateTime::parse(text, &Rfc3339)
                .map_err(|_| {
                    Problem::bad_request(
                        "since must be an RFC 3339 time, like 2026-11-28T00:00:00Z",
                    )
                })?
                .unix_timestamp(),
        ),
    };
    let after = match &query.cursor {
        None => 0,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| {
                Problem::bad_request("cursor must be the next_cursor of a previous page")
            })?,
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=AUDIT_PAGE_MAX).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {AUDIT_PAGE_MAX}"
        )));
    }
    // `client` may name a client by section name or by its client_id.
    let client_id = query.client.map(|c| {
        state
            .access()
            .client(&c)
            .map_or(c, |client| client.client_id.clone())
    });
    let filter = crate::audit::AuditFilter {
        since,
        client_id,
        caller: query.caller,
        kid: query.kid,
        event: query.event,
    };
    let records = state
        .keyring
        .store()
        .audit_page(&filter, after, limit)
        .await?;
    let next_cursor = (records.len() as u32 == limit)
        .then(|| records.last().map(|r| r.seq.to_string()))
        .flatten();
    let records = records
        .iter()
        .map(|r| {
            let e = &r.event;
            AuditEntry {
                seq: r.seq,
                time: crate::rfc3339(e.time),
                event: e.event.clone(),
                caller: e.caller.clone(),
                client_id: e.client_id.clone(),
                keyset: e.keyset.clone(),
                kid: e.kid.clone(),
                jti: e.jti.clone(),
                audience: e.audience.clone(),
                expires_at: e.expires_at.and_then(crate::rfc3339),
                detail: e
                    .detail
                    .as_deref()
                    .and_then(|d| serde_json::from_str(d).ok()),
                hash: r.hash.clone(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(AuditPage {
        records,
        next_cursor,
    }))
}

/// The key set's JWKS as published, for tools that run beside jwksd (`jwksd register`).
async fn keyset_jwks(
    _: AdminAuth,
    state: web::Data<State>,
    keyset: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let snapshot = state.keyring.snapshot();
    let view = keyset_view(&snapshot, &keyset)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(view.jwks.body.clone()))
}

/// The configured clients (no secrets), with the JWKS URL of each one's key set.
async fn list_clients(_: AdminAuth, state: web::Data<State>) -> HttpResponse {
    let access = state.access();
    let base = state.public_url.as_str();
    let clients = access
        .clients
        .values()
        .map(|c| ClientInfo {
            name: c.name.clone(),
            client_id: c.client_id.clone(),
            keyset: c.keyset.clone(),
            token_endpoint: c.token_endpoint.as_ref().map(|u| u.as_str().to_owned()),
            audiences: c.audiences.clone(),
            fhir_base_url: c.fhir_base_url.as_ref().map(|u| u.as_str().to_owned()),
            scope: c.scope.clone(),
            allowed_scopes: c.allowed_scopes.clone(),
            assertion_lifetime_seconds: c.assertion_lifetime,
            jwks_url: format!("{base}/jwks/{}.json", c.keyset),
        })
        .collect();
    HttpResponse::Ok().json(ClientList { clients })
}

/// A real, uncached token request whose token is not returned: only whether it worked,
/// and if not, the classified failure.
async fn token_check(
    _: AdminAuth,
    req: HttpRequest,
    state: web::Data<State>,
    client: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    let request: TokenCheckRequest = admin_body(&req, &body)?;
    let access = state.access();
    let client = access
        .client(&client)
        .ok_or_else(|| Problem::not_found("no client by that name is configured"))?;
    let scope = request
        .scope
        .or_else(|| client.scope.clone())
        .unwrap_or_default();
    let ctx = TokenContext {
        signing: &state.signing,
        caller: "admin",
    };
    let check = match state.tokens.fresh_token(&ctx, client, &scope).await {
        Ok(answer) => TokenCheck::Passed(TokenCheckPassed {
            ok: true,
            // As the endpoint sent them, typed or not.
            token_type: answer.body.member("token_type"),
            expires_in: answer.body.member("expires_in"),
            scope: answer.body.member("scope"),
            diagnosis: answer.diagnosis,
        }),
        Err(TokenError::Upstream {
            class,
            status,
            error,
            error_description,
            error_uri,
            diagnosis,
            ..
        }) => TokenCheck::Failed(TokenCheckFailed {
            ok: false,
            classification: class,
            explanation: class.explanation().to_owned(),
            fix: class.fix().to_owned(),
            upstream_status: status,
            error,
            error_description,
            error_uri,
            diagnosis: *diagnosis,
        }),
        Err(other) => return Err(other.into()),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(check))
}
