//! `jwksd doctor`: walks a client's whole path as the EHR sees it and says, check by check,
//! what works and what to do about what does not.
//!
//! It asks the running service (admin API) for the client, its key set and an uncached
//! token request, and fetches the public JWKS URL and the SMART discovery document itself,
//! from this host, the way the EHR would. Every answer is read only up to a limit
//! ([`crate::tokens::upstream`]). What each EHR accepts comes from [`crate::vendor`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::client::Client;
use super::AdminArgs;
use crate::api::{FailureClass, PossibleCause, TokenCheck, TokenCheckFailed, TokenCheckPassed};
use crate::tokens::describe_reqwest_error;
use crate::tokens::discovery::{discovery_url, SmartConfiguration};
use crate::tokens::upstream::{read_limited, JWKS_LIMIT};

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The token request's failure class, on the token check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<FailureClass>,
    /// When the class is `undetermined`: the causes the evidence allows, most likely first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub possible_causes: Vec<PossibleCause>,
}

/// The token the EHR issued, in words: only the members it sent, as it sent them.
fn issued_token(passed: &TokenCheckPassed) -> String {
    let as_text = |value: &Option<serde_json::Value>| match value {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    };
    let mut text = match as_text(&passed.token_type) {
        Some(token_type) => format!("the EHR issued a {token_type} token"),
        None => "the EHR issued a token".to_owned(),
    };
    if let Some(scope) = as_text(&passed.scope).filter(|s| !s.is_empty()) {
        text.push_str(&format!(" for {scope:?}"));
    }
    match &passed.expires_in {
        Some(serde_json::Value::Number(seconds)) => text.push_str(&format!(", valid {seconds}s")),
        // A vendor's "expires_in": "3600", shown as sent.
        Some(serde_json::Value::String(seconds)) => {
            text.push_str(&format!(", valid {seconds:?} (a string) seconds"))
        }
        _ => text.push_str(" without an expires_in"),
    }
    text
}

/// What the token endpoint answered, in words: only what it actually sent.
fn upstream_answer(failed: &TokenCheckFailed) -> String {
    let Some(status) = failed.upstream_status else {
        return "no answer from the token endpoint".to_owned();
    };
    let mut answer = format!("the token endpoint answered {status}");
    if let Some(error) = &failed.error {
        answer.push_str(&format!(" {error}"));
    }
    if let Some(description) = &failed.error_description {
        answer.push_str(&format!(": {description:?}"));
    }
    answer
}

fn check(
    check: &'static str,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        check,
        verdict,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
        classification: None,
        possible_causes: Vec::new(),
    }
}

/// `jwksd doctor`: runs the checks, prints them, and fails when one failed.
pub async fn run(args: &AdminArgs, client: &str) -> anyhow::Result<()> {
    let api = args.client()?;
    let outbound = crate::tokens::outbound_client()?;
    let checks = diagnose(&api, &outbound, client).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        print(&checks);
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed > 0 {
        return Err(super::AlreadyReported(format!("{failed} check(s) failed")).into());
    }
    Ok(())
}

/// Runs every check for `client_name`.
pub async fn diagnose(
    admin: &Client,
    outbound: &reqwest::Client,
    client_name: &str,
) -> anyhow::Result<Vec<Check>> {
    let (client, keyset) = admin.client_and_keyset(client_name).await?;
    let mut checks = Vec::new();
    let alg = keyset.alg.clone();
    let current = keyset.current_kid.clone().unwrap_or_default();
    let next = keyset.next_kid.clone().unwrap_or_default();

    let endpoint_hint = client
        .token_endpoint
        .as_deref()
        .or(client.fhir_base_url.as_deref())
        .unwrap_or_default();
    let vendor = crate::vendor::Vendor::recognise(endpoint_hint);

    // 1. The public JWKS URL, fetched like an EHR would.
    checks.extend(jwks_url_checks(outbound, &client.jwks_url, &current, &next, vendor).await);

    // 2. The algorithm against what the vendor accepts.
    checks.push(if vendor.accepts(alg.as_str()) {
        check(
            "algorithm",
            Verdict::Ok,
            format!("{alg} is accepted by {}", vendor.name()),
            None,
        )
    } else {
        check(
            "algorithm",
            Verdict::Fail,
            format!(
                "{alg} is not among what {} accepts ({})",
                vendor.name(),
                vendor.algorithms().join(", ")
            ),
            Some("create a key set with an accepted alg and point this client at it"),
        )
    });

    // 3. Discovery, and the token endpoint and audience against it.
    let configured_endpoint = client.token_endpoint.clone();
    let mut discovered_endpoint = None;
    match client.fhir_base_url.as_deref() {
        None => checks.push(check(
            "discovery",
            Verdict::Skip,
            "no fhir_base_url configured",
            Some("set clients.<name>.fhir_base_url to check discovery and the token endpoint"),
        )),
        Some(base) => match fetch_discovery(outbound, base).await {
            Err(detail) => checks.push(check(
                "discovery",
                Verdict::Fail,
                detail,
                Some("check fhir_base_url (the FHIR base, e.g. .../fhir/r4/<practice>) and that this host can reach it"),
            )),
            Ok(smart) => {
                let grants = &smart.grant_types_supported;
                let methods = &smart.token_endpoint_auth_methods_supported;
                let mut refused = Vec::new();
                let mut unlisted = Vec::new();
                for (list, wanted, what) in [
                    (grants, "client_credentials", "grant type client_credentials"),
                    (methods, "private_key_jwt", "auth method private_key_jwt"),
                ] {
                    if list.is_empty() {
                        unlisted.push(what);
                    } else if !list.iter().any(|v| v == wanted) {
                        refused.push(what);
                    }
                }
                checks.push(if !refused.is_empty() {
                    check(
                        "discovery",
                        Verdict::Fail,
                        format!("the server does not list {}", refused.join(" or ")),
                        Some("this server may not offer backend services; ask the vendor"),
                    )
                } else if !unlisted.is_empty() {
                    check(
                        "discovery",
                        Verdict::Warn,
                        format!("the document omits {}", unlisted.join(" and ")),
                        Some("many servers omit these lists; the token request below is the real test"),
                    )
                } else {
                    check(
                        "discovery",
                        Verdict::Ok,
                        format!("{} lists client_credentials and private_key_jwt", discovery_url(base)),
                        None,
                    )
                });
                if !smart.token_endpoint_auth_signing_alg_values_supported.is_empty()
                    && !smart.token_endpoint_auth_signing_alg_values_supported.contains(&alg)
                {
                    checks.push(check(
                        "discovered_algorithms",
                        Verdict::Fail,
                        format!(
                            "the server lists {} for client authentication, not {alg}",
                            smart.token_endpoint_auth_signing_alg_values_supported.join(", ")
                        ),
                        Some("use a key set with one of the listed algorithms"),
                    ));
                }
                discovered_endpoint = Some(smart.token_endpoint);
            }
        },
    }
    let endpoint = configured_endpoint
        .clone()
        .or(discovered_endpoint.clone())
        .unwrap_or_default();
    if let (Some(configured), Some(discovered)) = (&configured_endpoint, &discovered_endpoint) {
        checks.push(if configured == discovered {
            check(
                "token_endpoint",
                Verdict::Ok,
                format!("{configured} matches discovery"),
                None,
            )
        } else {
            check(
                "token_endpoint",
                Verdict::Fail,
                format!("configured {configured} but discovery says {discovered}"),
                Some("set token_endpoint to the discovered value (or remove it to use discovery)"),
            )
        });
    }
    let audience = client
        .audiences
        .first()
        .cloned()
        .unwrap_or(endpoint.clone());
    checks.push(if audience == endpoint {
        check("audience", Verdict::Ok, format!("aud is exactly the token endpoint {endpoint}"), None)
    } else {
        check(
            "audience",
            Verdict::Fail,
            format!("aud {audience:?} differs from the token endpoint {endpoint:?}"),
            Some("SMART requires aud to equal the token endpoint URL exactly; fix clients.<name>.audiences"),
        )
    });

    // 4. Scopes.
    let scope = client.scope.as_deref().unwrap_or_default();
    let not_system: Vec<&str> = scope
        .split_whitespace()
        .filter(|s| !s.starts_with("system/"))
        .collect();
    checks.push(if scope.is_empty() {
        check("scopes", Verdict::Warn, "no default scope configured", Some("set clients.<name>.scope to the system/ scopes the app is registered for"))
    } else if not_system.is_empty() {
        check("scopes", Verdict::Ok, format!("{scope} are system/ scopes"), None)
    } else {
        check(
            "scopes",
            Verdict::Fail,
            format!("{} are not system/ scopes", not_system.join(" ")),
            Some("backend services get system/ scopes only (system/Patient.read or system/Patient.rs)"),
        )
    });

    // 5. A real token request (not cached, token not shown), and the clock from its Date.
    let answer = admin.token_check(&client.name).await?;
    if let Some(skew) = answer.diagnosis().clock_skew_seconds {
        checks.push(if skew.abs() <= 30 {
            check(
                "clock",
                Verdict::Ok,
                format!("local clock within {}s of the token endpoint's", skew.abs()),
                None,
            )
        } else {
            check(
                "clock",
                Verdict::Fail,
                format!("local clock differs from the token endpoint's Date by {skew}s"),
                Some("synchronise this host's clock (NTP); assertions carry iat and exp"),
            )
        });
    }
    match answer {
        TokenCheck::Passed(passed) => checks.push(check(
            "token_request",
            Verdict::Ok,
            issued_token(&passed),
            None,
        )),
        TokenCheck::Failed(failed) => {
            let mut shown = check(
                "token_request",
                Verdict::Fail,
                format!("{} ({})", failed.explanation, upstream_answer(&failed)),
                Some(&failed.fix),
            );
            shown.classification = Some(failed.classification);
            shown.possible_causes = failed.diagnosis.possible_causes.clone();
            checks.push(shown);
        }
    }
    Ok(checks)
}

async fn fetch_discovery(http: &reqwest::Client, base: &str) -> Result<SmartConfiguration, String> {
    let base = reqwest::Url::parse(base)
        .map_err(|e| format!("the fhir_base_url {base:?} is not a URL: {e}"))?;
    crate::tokens::discovery::discover(http, &base)
        .await
        .map_err(|e| e.to_string())
}

/// The kids of what answers at the public JWKS URL. Read loosely on purpose (not as
/// [`crate::api::Jwks`]): this is whatever the EHR would get there, perhaps a stale copy
/// or a proxy's document, and the check is only whether the live kids are in it.
#[derive(Default, Deserialize)]
struct ServedKids {
    #[serde(default)]
    keys: Vec<ServedKid>,
}

#[derive(Default, Deserialize)]
struct ServedKid {
    kid: Option<String>,
}

/// Where a JWKS URL's host is, as far as its name tells without a DNS lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostKind {
    Loopback,
    /// RFC 1918, link-local, unique local (fc00::/7), CGNAT: not reachable from a cloud.
    Private,
    Public,
}

fn host_kind(url: &reqwest::Url) -> HostKind {
    use std::net::IpAddr;
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            return if name == "localhost" || name.ends_with(".localhost") {
                HostKind::Loopback
            } else if name.ends_with(".local") || name.ends_with(".internal") || !name.contains('.')
            {
                HostKind::Private
            } else {
                HostKind::Public
            };
        }
        None => return HostKind::Private,
    };
    match ip {
        _ if ip.is_loopback() => HostKind::Loopback,
        IpAddr::V4(v4) => {
            let cgnat = v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]);
            if v4.is_private() || v4.is_link_local() || v4.is_unspecified() || cgnat {
                HostKind::Private
            } else {
                HostKind::Public
            }
        }
        IpAddr::V6(v6) => {
            let unique_local = (v6.segments()[0] & 0xfe00) == 0xfc00;
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            if unique_local || link_local || v6.is_unspecified() {
                HostKind::Private
            } else {
                HostKind::Public
            }
        }
    }
}

/// The checks of a client's JWKS URL that `doctor` and `register` share: it exists, it is
/// https, it is reachable from the vendor (not loopback or a private address when the
/// vendor is a cloud EHR), and it answers, from this host, jwksd's live JWKS.
pub async fn jwks_url_checks(
    http: &reqwest::Client,
    url: &str,
    current: &str,
    next: &str,
    vendor: crate::vendor::Vendor,
) -> Vec<Check> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(parsed) if url.contains("://") => parsed,
        _ => {
            return vec![check(
                "jwks_url",
                Verdict::Fail,
                "server.public_url is not set, so there is no JWKS URL to give the EHR",
                Some(
                    "set server.public_url to the https address EHRs reach the public listener at",
                ),
            )]
        }
    };
    let mut checks = Vec::new();
    let https = parsed.scheme() == "https";
    let kind = host_kind(&parsed);
    let loopback = kind == HostKind::Loopback;
    let cloud = vendor != crate::vendor::Vendor::Generic;
    checks.push(match kind {
        HostKind::Public => check(
            "jwks_address",
            Verdict::Ok,
            format!("{} is a public host name or address", parsed.host_str().unwrap_or_default()),
            None,
        ),
        HostKind::Loopback | HostKind::Private => check(
            "jwks_address",
            // A cloud EHR fetches from the internet; a generic server may be a local test.
            if cloud { Verdict::Fail } else { Verdict::Warn },
            format!(
                "{} is {}: {} cannot fetch it from outside this network",
                parsed.host_str().unwrap_or_default(),
                if loopback { "a loopback host" } else { "a private address" },
                vendor.name()
            ),
            Some("set server.public_url to the public https name the EHR reaches the public listener at"),
        ),
    });
    checks.push(if https {
        check("jwks_https", Verdict::Ok, format!("{url} uses https"), None)
    } else {
        check(
            "jwks_https",
            // Plain http is tolerable only for a local test setup.
            if loopback && !cloud { Verdict::Warn } else { Verdict::Fail },
            format!("{url} is plain http: EHRs fetch JWKS URLs only over https"),
            Some("put a TLS terminator with a complete certificate chain in front of the public listener"),
        )
    });
    let started = Instant::now();
    let response = match http.get(url).send().await {
        Ok(response) => response,
        Err(e) => {
            let detail = describe_reqwest_error(&e);
            let fix = if detail.contains("certificate") || detail.contains("UnknownIssuer") {
                "serve the full certificate chain (leaf and intermediates); EHRs do not fetch missing intermediates"
            } else {
                "check that the EHR can reach public_url: DNS, firewall, TLS"
            };
            checks.push(check(
                "jwks_fetch",
                Verdict::Fail,
                format!("{url}: {detail}"),
                Some(fix),
            ));
            return checks;
        }
    };
    let elapsed = started.elapsed();
    let status = response.status();
    if status.is_redirection() {
        checks.push(check(
            "jwks_fetch",
            Verdict::Fail,
            format!("{url} redirects ({status}); Epic and others do not follow redirects"),
            Some("register the final URL, or serve the JWKS without a redirect"),
        ));
        return checks;
    }
    if !status.is_success() {
        checks.push(check(
            "jwks_fetch",
            Verdict::Fail,
            format!("{url} answered {status}"),
            Some("check public_url and the proxy in front of jwksd"),
        ));
        return checks;
    }
    checks.push(if elapsed <= Duration::from_secs(2) {
        check(
            "jwks_fetch",
            Verdict::Ok,
            format!("answered 200 in {} ms", elapsed.as_millis()),
            None,
        )
    } else {
        check(
            "jwks_fetch",
            Verdict::Warn,
            format!(
                "answered in {} ms; EHRs time out after a few seconds",
                elapsed.as_millis()
            ),
            Some("check the network path and proxy"),
        )
    });
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let cache_control = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    checks.push(
        if content_type.starts_with("application/json")
            || content_type.starts_with("application/jwk-set+json")
        {
            check("jwks_content_type", Verdict::Ok, content_type.clone(), None)
        } else {
            check(
                "jwks_content_type",
                Verdict::Fail,
                format!("Content-Type is {content_type:?}"),
                Some("serve the JWKS as application/json"),
            )
        },
    );
    checks.push(
        if cache_control.contains("max-age") && !cache_control.contains("no-store") {
            check(
                "jwks_cache_control",
                Verdict::Ok,
                cache_control.clone(),
                None,
            )
        } else {
            check(
            "jwks_cache_control",
            Verdict::Fail,
            format!("Cache-Control is {cache_control:?}"),
            Some("a proxy rewrote jwksd's Cache-Control; keep public, max-age=N (never no-store)"),
        )
        },
    );
    let body = match read_limited(response, JWKS_LIMIT).await {
        Ok(bytes) => serde_json::from_slice::<ServedKids>(&bytes).unwrap_or_default(),
        Err(e) => {
            checks.push(check(
                "jwks_kids",
                Verdict::Fail,
                format!("{url}: {e}"),
                Some(
                    "the URL must serve jwksd's JWKS, a few KiB; check what answers at public_url",
                ),
            ));
            return checks;
        }
    };
    let kids: Vec<&str> = body.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
    let missing: Vec<&str> = [current, next]
        .into_iter()
        .filter(|k| !k.is_empty() && !kids.contains(k))
        .collect();
    checks.push(if missing.is_empty() {
        check(
            "jwks_kids",
            Verdict::Ok,
            "contains the current and the next kid".to_owned(),
            None,
        )
    } else {
        check(
            "jwks_kids",
            Verdict::Fail,
            format!(
                "missing {} (a stale copy or cache in front of jwksd?)",
                missing.join(", ")
            ),
            Some("the URL must serve jwksd's live JWKS; purge caches that hold an old copy"),
        )
    });
    checks
}

/// A failure class's name on the wire (`kid_not_yet_seen`).
fn class_name(class: FailureClass) -> String {
    serde_json::to_string(&class)
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

/// Prints the report for a person.
pub fn print(checks: &[Check]) {
    for c in checks {
        let tag = match c.verdict {
            Verdict::Ok => " ok ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        };
        match c.classification.map(class_name) {
            Some(class) => println!("[{tag}] {:<22} {} [{class}]", c.check, c.detail),
            None => println!("[{tag}] {:<22} {}", c.check, c.detail),
        }
        if !c.possible_causes.is_empty() {
            println!("       {:<22} possible causes, most likely first:", "");
            for (n, cause) in c.possible_causes.iter().enumerate() {
                println!(
                    "       {:<22} {}. {}; check: {}",
                    "",
                    n + 1,
                    cause.explanation,
                    cause.check
                );
            }
        }
        if let (Some(fix), Verdict::Fail | Verdict::Warn | Verdict::Skip) = (&c.fix, c.verdict) {
            println!("       {:<22} fix: {fix}", "");
        }
    }
}
