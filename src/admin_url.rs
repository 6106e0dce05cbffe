//! URLs of the admin API, built in one place for the CLI, `doctor` and `register`: every
//! argument that goes into a path is checked to be a name and pushed as one segment.

use anyhow::{bail, Context};

/// The private listener's base URL; `HOST:PORT` alone means plain http.
pub fn server_url(server: &str) -> String {
    let server = server.trim_end_matches('/');
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

/// The URL of an admin API resource: `server` (the private listener's base URL), then
/// `/admin/v1/` and `segments`. Every segment must be a name (see [`check_segment`]) and is
/// pushed as one percent-encoded path segment, so that no argument, such as the kid
/// `x/../../keysets/default/rotate?force=true#`, can steer a request to another route.
/// Every admin request of the CLI, `doctor` and `register` is built here.
pub fn admin_url(server: &str, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    for segment in segments {
        check_segment(segment)?;
    }
    let mut url = reqwest::Url::parse(&server_url(server)).with_context(|| {
        format!(
            "the admin URL {server:?} is not a URL; set --server or JWKSD_SERVER to the private \
             listener, e.g. http://127.0.0.1:8081"
        )
    })?;
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|_| {
            anyhow::anyhow!("the admin URL {server:?} cannot have a path; use http://HOST:PORT")
        })?
        .pop_if_empty()
        .extend(["admin", "v1"])
        .extend(segments);
    Ok(url)
}

/// Kids (base64url thumbprints), key set names and client names are made of letters,
/// digits, `.`, `_` and `-`. Anything else is refused before a request is made, rather than
/// encoded and sent: `.` and `..` in particular are dropped silently by URL libraries
/// (`reqwest::Url` among them), which would send the request to the parent route.
fn check_segment(segment: &str) -> anyhow::Result<()> {
    let is_name = !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !is_name {
        bail!(
            "refusing {segment:?}: a kid, key set or client name is made only of letters, \
             digits, '.', '_' and '-' (and is not \".\" or \"..\"); nothing was sent to jwksd"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_keep_the_base_and_refuse_what_is_not_a_name() {
        let url = admin_url("127.0.0.1:8081/", &["keysets", "epic-prod", "keys"]).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8081/admin/v1/keysets/epic-prod/keys"
        );
        let url = admin_url(
            "https://ops.example/jwksd/?x=1#y",
            &["keys", "a.b_c-D9", "revoke"],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://ops.example/jwksd/admin/v1/keys/a.b_c-D9/revoke"
        );
        for bad in ["", ".", "..", "a/b", "a?b", "a#b", "a%2Fb", "é", "a b"] {
            let err = admin_url("http://127.0.0.1:8081", &["keys", bad, "revoke"]).unwrap_err();
            assert!(
                err.to_string().contains("nothing was sent"),
                "{bad:?}: {err}"
            );
        }
    }
}
