//! The status page's HTML, written as Rust: one escaping helper ([`escape`]) through which
//! every value from outside the code passes, a layout, and one function per page. No
//! script anywhere (the Content-Security-Policy forbids it), no inline style (the one
//! stylesheet is served from `/status/style.css`); the activity chart is inline SVG with
//! presentation attributes and a table of its numbers beside it.

use std::fmt::Write;

use crate::keyring::KeysetSchedule;
use crate::rotation::{GateStatus, KeyRecord, KeyState, UnixTime, Unseen};

use super::super::state::RecentRefusal;
use super::view::{self, Activity, FetcherView, RotateConsequence, ACTIVITY_HOURS};

/// `text` safe inside an element or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time as a `<time>` element: UTC, minutes, with the machine-readable form.
fn time(t: UnixTime) -> String {
    let iso = crate::rfc3339(t).unwrap_or_default();
    let shown = iso.get(..16).unwrap_or(&iso).replace('T', " ");
    format!(
        "<time datetime=\"{}\">{} UTC</time>",
        escape(&iso),
        escape(&shown)
    )
}

/// "in 3 d 4 h" / "5 min ago" / "due now".
fn relative(t: UnixTime, now: UnixTime) -> String {
    match t - now {
        d if d > 0 => format!("in {}", view::span(d)),
        0 => "now".to_owned(),
        d => format!("{} ago", view::span(-d)),
    }
}

/// Who is signed in, for the header: `Some(csrf)` shows the logout form.
pub struct Chrome<'a> {
    pub csrf: Option<&'a str>,
}

/// The whole document around `body`.
pub fn layout(title: &str, chrome: &Chrome<'_>, body: &str) -> String {
    let logout = match chrome.csrf {
        Some(csrf) => format!(
            "<form class=\"logout\" method=\"post\" action=\"/status/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>",
            escape(csrf)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · jwksd</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"/status/style.css\">\n</head>\n<body>\n\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\n\
         <header class=\"top\"><p class=\"brand\"><a href=\"/\">jwksd</a></p>{logout}</header>\n\
         <main id=\"main\">\n{body}\n</main>\n</body>\n</html>\n",
        escape(title)
    )
}

/// The login form; `error` is shown above it (a wrong token), `insecure` warns that the
/// browser will not keep the session cookie over plain HTTP to this host.
pub fn login_page(error: Option<&str>, insecure: bool) -> String {
    let mut body = String::from("<div class=\"narrow\"><h1>Sign in to jwksd</h1>\n");
    if insecure {
        body.push_str(
            "<p class=\"warning\" role=\"note\"><strong>Plain HTTP:</strong> this page was \
             reached over HTTP on an address other than loopback. The admin token would cross \
             the network unencrypted, and the browser will not keep the session cookie \
             (it is Secure). Serve the private listener over HTTPS, or reach it through an \
             SSH tunnel to 127.0.0.1.</p>\n",
        );
    }
    let described = if let Some(error) = error {
        let _ = writeln!(
            body,
            "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
            escape(error)
        );
        " aria-describedby=\"login-error token-hint\" aria-invalid=\"true\""
    } else {
        " aria-describedby=\"token-hint\""
    };
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/status/login\" class=\"stack\">\n\
         <label for=\"token\">Admin token</label>\n\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" \
         required{described}>\n\
         <p class=\"hint\" id=\"token-hint\">The admin API's bearer token: \
         <code>server.admin_token_file</code>, by default <code>data/admin.token</code>.</p>\n\
         <button type=\"submit\">Sign in</button>\n</form></div>"
    );
    layout("Sign in", &Chrome { csrf: None }, &body)
}

/// Everything the status page shows of one key set.
pub struct KeysetPanel<'a> {
    pub name: &'a str,
    pub alg: &'a str,
    pub jwks_url: String,
    pub timing: crate::rotation::Timing,
    /// Oldest first, as the snapshot holds them.
    pub records: &'a [KeyRecord],
    /// The keyring's schedule, as the admin API reports it; `None` when it could not be
    /// read (the fetch gate reads the store).
    pub schedule: Option<KeysetSchedule>,
    pub fetchers: Option<Vec<FetcherView>>,
    pub activity: Option<Activity>,
}

/// The status page itself.
pub struct StatusPage<'a> {
    pub now: UnixTime,
    pub csrf: &'a str,
    pub keysets: Vec<KeysetPanel<'a>>,
    /// `None` when the audit trail could not be read (the panels then say so).
    pub activity_error: Option<&'a str>,
    pub activity_truncated: bool,
    pub public_url_set: bool,
    pub refusals: Vec<RecentRefusal>,
}

/// Removed keys listed per key set beyond the published ones (older ones are only counted).
const REMOVED_SHOWN: usize = 3;

pub fn status_page(page: &StatusPage<'_>) -> String {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<h1>Key status</h1>\n<p class=\"meta\">As of {} on this jwksd. Reload the page \
         to refresh.</p>",
        time(page.now)
    );
    if !page.public_url_set {
        body.push_str(
            "<p class=\"warning\" role=\"note\"><strong>server.public_url is not set:</strong> \
             JWKS URLs below are paths on the public listener; set it to the URL EHRs use.</p>\n",
        );
    }
    body.push_str("<div class=\"keysets\">\n");
    for panel in &page.keysets {
        keyset_panel(&mut body, panel, page);
    }
    body.push_str("</div>\n");
    refusals(&mut body, &page.refusals);
    layout(
        "Key status",
        &Chrome {
            csrf: Some(page.csrf),
        },
        &body,
    )
}

fn keyset_panel(out: &mut String, panel: &KeysetPanel<'_>, page: &StatusPage<'_>) {
    let name = escape(panel.name);
    let now = page.now;
    let t = &panel.timing;
    let _ = writeln!(
        out,
        "<section class=\"keyset\" aria-labelledby=\"ks-{name}\" data-keyset=\"{name}\">\n\
         <h2 id=\"ks-{name}\">{name} <span class=\"alg\">{}</span></h2>\n<dl class=\"facts\">\n\
         <dt>JWKS URL</dt><dd><code class=\"url\">{}</code></dd>",
        escape(panel.alg),
        escape(&panel.jwks_url)
    );
    next_rotation(out, panel, now);
    match view::next_removal(panel.records) {
        Some((kid, at)) => {
            let _ = writeln!(
                out,
                "<dt>Next removal</dt><dd><code class=\"kid\">{}</code> leaves the JWKS {} ({})</dd>",
                escape(kid),
                time(at),
                relative(at, now)
            );
        }
        None => out.push_str("<dt>Next removal</dt><dd>none (no retired key)</dd>\n"),
    }
    let period = t
        .rotation_period
        .map_or_else(|| "manual".to_owned(), view::span);
    let _ = writeln!(
        out,
        "<dt>Policy</dt><dd>rotation every {} · prepublish {} · JWKS cached up to {} · \
         retire grace {}</dd>\n</dl>",
        escape(&period),
        view::span(t.prepublish),
        view::span(t.jwks_max_age),
        view::span(t.retire_grace)
    );

    // The timeline, newest first: what is published, then a few keys that left.
    let _ = writeln!(
        out,
        "<h3>Keys</h3>\n<ol class=\"timeline\" aria-label=\"Keys of {name}, newest first\">"
    );
    let mut removed_shown = 0;
    let mut removed_hidden = 0;
    for key in panel.records.iter().rev() {
        if key.state == KeyState::Removed {
            if removed_shown == REMOVED_SHOWN {
                removed_hidden += 1;
                continue;
            }
            removed_shown += 1;
        }
        key_item(out, key, now);
    }
    out.push_str("</ol>\n");
    if removed_hidden > 0 {
        let _ = writeln!(
            out,
            "<p class=\"hint\">and {removed_hidden} older removed keys (the admin API lists them all).</p>"
        );
    }
    let _ = writeln!(
        out,
        "<p class=\"actions\"><a class=\"button\" href=\"/status/keysets/{name}/rotate\">Rotate \
         {name}…</a></p>"
    );

    fetchers(out, panel);
    activity(out, panel, page);
    out.push_str("</section>\n");
}

/// The next rotation and, with `rotation_requires_fetch`, where its fetch gate stands.
fn next_rotation(out: &mut String, panel: &KeysetPanel<'_>, now: UnixTime) {
    let Some(schedule) = &panel.schedule else {
        out.push_str(
            "<dt>Next rotation</dt><dd>unknown right now (the store cannot be read; the \
             server log has the cause)</dd>\n",
        );
        return;
    };
    let held = matches!(schedule.gate, GateStatus::Waiting { .. });
    match schedule.next_rotation_at {
        Some(at) if at <= now && held => {
            let _ = writeln!(
                out,
                "<dt>Next rotation</dt><dd>due since {} ({}), waiting for fetchers</dd>",
                time(at),
                relative(at, now)
            );
        }
        Some(at) if at <= now => {
            let _ = writeln!(
                out,
                "<dt>Next rotation</dt><dd>due now (the scheduler promotes the next key \
                 within seconds)</dd>"
            );
        }
        Some(at) => {
            let _ = writeln!(
                out,
                "<dt>Next rotation</dt><dd>{} ({})</dd>",
                time(at),
                relative(at, now)
            );
        }
        None if panel.timing.rotation_period.is_none() => {
            out.push_str("<dt>Next rotation</dt><dd>manual only (rotation_period is off)</dd>\n");
        }
        None => out.push_str("<dt>Next rotation</dt><dd>none scheduled (no next key)</dd>\n"),
    }
    let fetchers = |unseen: &[Unseen]| {
        unseen
            .iter()
            .map(|u| format!("<code>{}</code>", escape(&u.fetcher)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (state, words) = match &schedule.gate {
        GateStatus::Off => return,
        GateStatus::NotDue { unseen, .. } if unseen.is_empty() => (
            "not_due",
            "not due yet; every recent fetcher has the next key".to_owned(),
        ),
        GateStatus::NotDue { unseen, .. } => (
            "not_due",
            format!(
                "not due yet; if it were due now it would wait for {} to be served the next key",
                fetchers(unseen)
            ),
        ),
        GateStatus::Satisfied { .. } => (
            "satisfied",
            "every recent fetcher has had the next key long enough: it rotates at the next tick"
                .to_owned(),
        ),
        GateStatus::Waiting {
            deadline, unseen, ..
        } => (
            "waiting",
            format!(
                "waiting for {} to be served the next key; rotates anyway at {} ({})",
                fetchers(unseen),
                time(*deadline),
                relative(*deadline, now)
            ),
        ),
        GateStatus::DeadlinePassed {
            deadline, unseen, ..
        } => (
            "deadline_passed",
            format!(
                "the deadline ({}) has passed: it rotates anyway, though {} may not have the \
                 next key",
                time(*deadline),
                fetchers(unseen)
            ),
        ),
    };
    let _ = writeln!(
        out,
        "<dt>Rotation gate</dt><dd data-gate=\"{state}\">{words}</dd>"
    );
}

fn key_item(out: &mut String, key: &KeyRecord, now: UnixTime) {
    let kid = escape(&key.kid);
    let state = key.state.as_str();
    let _ = write!(
        out,
        "<li class=\"key state-{state}\" data-kid=\"{kid}\" data-state=\"{state}\">\n\
         <p class=\"key-head\"><span class=\"badge\">{state}</span> <code class=\"kid\">{kid}</code></p>\n\
         <dl class=\"dates\">"
    );
    let mut date = |label: &str, at: Option<UnixTime>| {
        if let Some(at) = at {
            let _ = write!(out, "<div><dt>{label}</dt> <dd>{}</dd></div> ", time(at));
        }
    };
    date("created", Some(key.created_at));
    date("published", Some(key.published_at));
    date("promoted", key.activated_at);
    date("retired", key.retired_at);
    if key.state == KeyState::Retired {
        date("leaves the JWKS", key.remove_at);
    }
    date("removed", key.removed_at);
    date("revoked", key.revoked_at);
    out.push_str("</dl>\n");
    if key.state == KeyState::Next {
        let _ = writeln!(
            out,
            "<p class=\"hint\">published for {}</p>",
            view::span(now - key.published_at)
        );
    }
    if key.state.is_published() {
        let _ = writeln!(
            out,
            "<p class=\"actions\"><a class=\"button danger\" href=\"/status/keys/{kid}/revoke\" \
             aria-label=\"Revoke key {kid}\">Revoke…</a></p>"
        );
    }
    out.push_str("</li>\n");
}

fn fetchers(out: &mut String, panel: &KeysetPanel<'_>) {
    out.push_str("<h3>Fetchers</h3>\n");
    let Some(fetchers) = &panel.fetchers else {
        out.push_str(
            "<p class=\"hint\">The fetcher record cannot be read right now (the server log \
             has the cause).</p>\n",
        );
        return;
    };
    if fetchers.is_empty() {
        out.push_str("<p class=\"hint\">Nobody has fetched this JWKS yet.</p>\n");
        return;
    }
    out.push_str(
        "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"Fetchers, scrollable\">\
         <table><thead><tr><th scope=\"col\">Fetcher</th><th scope=\"col\">Last fetch</th>\
         <th scope=\"col\">Kids seen</th></tr></thead><tbody>\n",
    );
    for f in fetchers {
        let kids: Vec<String> = f
            .kids_seen
            .iter()
            .map(|k| format!("<code class=\"kid\">{}</code>", escape(k)))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.label),
            time(f.last_seen),
            kids.join(" ")
        );
    }
    out.push_str("</tbody></table></div>\n");
}

const CALLER_FILL: &str = "#1f4e79";
const TOKEN_FILL: &str = "#b35900";

fn activity(out: &mut String, panel: &KeysetPanel<'_>, page: &StatusPage<'_>) {
    out.push_str("<h3>Last 24 hours</h3>\n");
    let Some(activity) = &panel.activity else {
        match page.activity_error {
            Some(error) => {
                let _ = writeln!(out, "<p class=\"warning\">{}</p>", escape(error));
            }
            None => out.push_str("<p class=\"hint\">No assertions in the last 24 hours.</p>\n"),
        }
        return;
    };
    let (callers, tokens) = activity.totals();
    let name = escape(panel.name);
    let _ = writeln!(
        out,
        "<p>{callers} assertions for callers, {tokens} for token requests.{}</p>",
        if page.activity_truncated {
            " (More than the page reads: recent hours may be missing.)"
        } else {
            ""
        }
    );
    let max = (0..ACTIVITY_HOURS)
        .map(|h| activity.for_callers[h] + activity.for_token_requests[h])
        .max()
        .unwrap_or(0)
        .max(1);
    let (width, height, bar) = (480.0_f64, 100.0_f64, 20.0_f64);
    let _ = writeln!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {width} {}\" role=\"img\" \
         aria-labelledby=\"chart-{name}-t chart-{name}-d\">\n\
         <title id=\"chart-{name}-t\">Assertions per hour, {name}</title>\n\
         <desc id=\"chart-{name}-d\">{callers} for callers and {tokens} for token requests in \
         the last 24 hours; the table below has the numbers of each hour.</desc>",
        height + 24.0
    );
    for hour in 0..ACTIVITY_HOURS {
        let (c, k) = (
            activity.for_callers[hour],
            activity.for_token_requests[hour],
        );
        let x = hour as f64 * bar + 2.0;
        let hc = height * f64::from(c) / f64::from(max);
        let hk = height * f64::from(k) / f64::from(max);
        let ago = ACTIVITY_HOURS - hour;
        let _ = writeln!(
            out,
            "<g><title>{ago} h to {} h ago: {c} for callers, {k} for token requests</title>\
             <rect x=\"{x}\" y=\"{:.1}\" width=\"16\" height=\"{hc:.1}\" fill=\"{CALLER_FILL}\"/>\
             <rect x=\"{x}\" y=\"{:.1}\" width=\"16\" height=\"{hk:.1}\" fill=\"{TOKEN_FILL}\"/></g>",
            ago - 1,
            height - hc,
            height - hc - hk,
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"0\" y1=\"{height}\" x2=\"{width}\" y2=\"{height}\" stroke=\"#444\"/>\
         <text x=\"0\" y=\"{}\" font-size=\"12\" fill=\"#222\">24 h ago</text>\
         <text x=\"{width}\" y=\"{}\" font-size=\"12\" fill=\"#222\" text-anchor=\"end\">now</text>\
         </svg>",
        height + 18.0,
        height + 18.0
    );
    let _ = writeln!(
        out,
        "<p class=\"legend\"><span class=\"swatch callers\"></span> for callers \
         <span class=\"swatch tokens\"></span> for token requests (stacked above)</p>"
    );
    out.push_str(
        "<details><summary>Numbers by hour</summary><table><thead><tr>\
         <th scope=\"col\">Hour</th><th scope=\"col\">For callers</th>\
         <th scope=\"col\">For token requests</th></tr></thead><tbody>\n",
    );
    for hour in (0..ACTIVITY_HOURS).rev() {
        let ago = ACTIVITY_HOURS - hour;
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{ago} h to {} h ago</th><td>{}</td><td>{}</td></tr>",
            ago - 1,
            activity.for_callers[hour],
            activity.for_token_requests[hour]
        );
    }
    out.push_str("</tbody></table></details>\n");
}

fn refusals(out: &mut String, refusals: &[RecentRefusal]) {
    out.push_str(
        "<section class=\"refusals\" aria-labelledby=\"refusals\">\n\
         <h2 id=\"refusals\">Recent refusals</h2>\n",
    );
    if refusals.is_empty() {
        out.push_str("<p class=\"hint\">No request was refused since this jwksd started.</p>\n");
    } else {
        out.push_str(
            "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"Recent refusals, scrollable\"><table><thead><tr><th scope=\"col\">Time</th>\
             <th scope=\"col\">Request</th><th scope=\"col\">Status</th>\
             <th scope=\"col\">Problem</th><th scope=\"col\">Who</th></tr></thead><tbody>\n",
        );
        for r in refusals {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><code>{} {}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(r.time),
                escape(&r.method),
                escape(&r.route),
                r.status,
                escape(r.slug),
                escape(r.actor.as_deref().unwrap_or("unknown"))
            );
        }
        out.push_str("</tbody></table></div>\n");
    }
    let _ = writeln!(
        out,
        "<p class=\"hint\">The last {} refused requests on this jwksd, newest first (each \
         replica keeps its own).</p>\n</section>",
        super::super::state::RecentRefusals::CAPACITY
    );
}

/// The confirmation step of a rotation.
pub fn confirm_rotate(keyset: &str, consequence: &RotateConsequence, csrf: &str) -> String {
    let name = escape(keyset);
    let mut body = format!("<div class=\"narrow\"><h1>Rotate {name}?</h1>\n");
    for (i, sentence) in consequence.sentences.iter().enumerate() {
        if i == 0 && consequence.forced {
            let _ = writeln!(
                body,
                "<p class=\"warning\" role=\"note\" id=\"consequence\"><strong>Warning:</strong> {}</p>",
                escape(sentence)
            );
        } else if i == 0 {
            let _ = writeln!(body, "<p id=\"consequence\">{}</p>", escape(sentence));
        } else {
            let _ = writeln!(body, "<p>{}</p>", escape(sentence));
        }
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/status/keysets/{name}/rotate\" class=\"stack\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
         <input type=\"hidden\" name=\"force\" value=\"{}\">\n\
         <input type=\"hidden\" name=\"expect\" value=\"{}\">\n\
         <p class=\"actions\"><button type=\"submit\" class=\"{}\">{}</button> \
         <a href=\"/\">Cancel</a></p>\n</form></div>",
        escape(csrf),
        consequence.forced,
        escape(&consequence.promoted),
        if consequence.forced { "danger" } else { "" },
        if consequence.forced {
            "Rotate now, forced"
        } else {
            "Rotate now"
        }
    );
    layout(
        &format!("Rotate {keyset}"),
        &Chrome { csrf: Some(csrf) },
        &body,
    )
}

/// The confirmation step of a revocation.
pub fn confirm_revoke(kid: &str, sentences: &[String], csrf: &str) -> String {
    let kid_html = escape(kid);
    let mut body =
        format!("<div class=\"narrow\"><h1>Revoke <code class=\"kid\">{kid_html}</code>?</h1>\n");
    for (i, sentence) in sentences.iter().enumerate() {
        let _ = writeln!(
            body,
            "<p{}>{}{}</p>",
            if i == 0 {
                " class=\"warning\" role=\"note\" id=\"consequence\""
            } else {
                ""
            },
            if i == 0 {
                "<strong>Warning:</strong> "
            } else {
                ""
            },
            escape(sentence)
        );
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/status/keys/{kid_html}/revoke\" class=\"stack\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n\
         <label for=\"reason\">Reason (kept in the audit trail)</label>\n\
         <input type=\"text\" id=\"reason\" name=\"reason\" maxlength=\"500\" autocomplete=\"off\">\n\
         <p class=\"actions\"><button type=\"submit\" class=\"danger\">Revoke now</button> \
         <a href=\"/\">Cancel</a></p>\n</form></div>",
        escape(csrf)
    );
    layout(
        &format!("Revoke {kid}"),
        &Chrome { csrf: Some(csrf) },
        &body,
    )
}

/// What an action did: a heading, facts, an optional warning.
pub fn outcome(
    title: &str,
    facts: &[(&str, Option<&str>)],
    warning: Option<&str>,
    csrf: &str,
) -> String {
    let mut body = format!(
        "<div class=\"narrow\"><h1 id=\"outcome\">{}</h1>\n<dl class=\"facts\">",
        escape(title)
    );
    for (label, value) in facts {
        if let Some(value) = value {
            let _ = write!(
                body,
                "<dt>{}</dt><dd><code class=\"kid\">{}</code></dd>",
                escape(label),
                escape(value)
            );
        }
    }
    body.push_str("</dl>\n");
    if let Some(warning) = warning {
        let _ = writeln!(
            body,
            "<p class=\"warning\" role=\"note\"><strong>Warning:</strong> {}</p>",
            escape(warning)
        );
    }
    body.push_str("<p><a href=\"/\">Back to the status page</a></p></div>");
    layout(title, &Chrome { csrf: Some(csrf) }, &body)
}

/// A refusal, for a person: the problem's title and detail.
pub fn refusal_page(title: &str, detail: &str, csrf: Option<&str>) -> String {
    let body = format!(
        "<div class=\"narrow\"><h1 id=\"refused\">{}</h1>\n<p class=\"error\" role=\"alert\">{}</p>\n\
         <p><a href=\"/\">Back to the status page</a></p></div>",
        escape(title),
        escape(detail)
    );
    layout(title, &Chrome { csrf }, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        let page = refusal_page("<b>", "<img src=x onerror=alert(1)>", None);
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<script"), "no script in any page");
    }
}
