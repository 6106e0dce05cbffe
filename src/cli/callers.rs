//! `jwksd callers new-token`: a caller token and the hash the configuration keeps of it.

/// Prints a fresh token and its SHA-256.
pub fn new_token() {
    let token = crate::random_token();
    let hash = hex::encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
    );
    println!(
        "# Give the token to the calling service; put only token_sha256 in jwksd's configuration."
    );
    println!("token:        {token}");
    println!("token_sha256: {hash}");
}
