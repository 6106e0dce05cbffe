//! `jwksd callers new-token`: a caller token and the hash the configuration keeps of it.

/// What `new-token --json` prints (the token is the point of the command: it is printed
/// once, here, and never kept).
#[derive(serde::Serialize)]
struct NewToken<'a> {
    token: &'a str,
    token_sha256: &'a str,
}

/// Prints a fresh token and its SHA-256 (as JSON with `json`).
pub fn new_token(json: bool) -> anyhow::Result<()> {
    let token = zeroize::Zeroizing::new(crate::random_token());
    let hash = hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    if json {
        let shown = NewToken {
            token: &token,
            token_sha256: &hash,
        };
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    println!(
        "# Give the token to the calling service; put only token_sha256 in jwksd's configuration."
    );
    println!("token:        {}", token.as_str());
    println!("token_sha256: {hash}");
    Ok(())
}
