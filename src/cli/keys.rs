//! `jwksd keys list|rotate|revoke`: the admin API's key operations, printed as a table or
//! (`--json`) as the answer itself.

use serde_json::Value;

use super::client::pretty;
use super::{AdminArgs, KeysCommand};

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("-")
        .to_owned()
}

/// Runs one `keys` subcommand.
pub async fn run(args: &AdminArgs, command: KeysCommand) -> anyhow::Result<()> {
    let client = args.client()?;
    let answer: Value = match &command {
        KeysCommand::List { keyset } => client.admin_get(&["keysets", keyset, "keys"]).await?,
        KeysCommand::Rotate { keyset, force } => {
            let query: &[(&str, &str)] = if *force { &[("force", "true")] } else { &[] };
            client
                .admin_post(&["keysets", keyset, "rotate"], query, None::<&()>)
                .await?
        }
        KeysCommand::Revoke { kid, reason } => {
            let body = reason.as_ref().map(|r| serde_json::json!({ "reason": r }));
            client
                .admin_post(&["keys", kid, "revoke"], &[], body.as_ref())
                .await?
        }
    };
    if args.json {
        println!("{}", pretty(&answer)?);
        return Ok(());
    }
    match command {
        KeysCommand::List { .. } => {
            println!(
                "{:<44} {:<8} {:<6} {:<21} {:<21} {:<21}",
                "KID", "STATE", "ALG", "PUBLISHED", "ACTIVATED", "LEAVES JWKS"
            );
            for key in answer["keys"].as_array().into_iter().flatten() {
                println!(
                    "{:<44} {:<8} {:<6} {:<21} {:<21} {:<21}",
                    text(key, "kid"),
                    text(key, "state"),
                    text(key, "alg"),
                    text(key, "published_at"),
                    text(key, "activated_at"),
                    text(key, "remove_at"),
                );
            }
        }
        KeysCommand::Rotate { .. } => {
            println!("now signing:   {}", text(&answer, "promoted"));
            println!("retired:       {}", text(&answer, "retired"));
            println!("new next key:  {}", text(&answer, "new_next"));
        }
        KeysCommand::Revoke { .. } => {
            println!("revoked:       {}", text(&answer, "revoked"));
            if answer["promoted"].is_string() {
                println!("now signing:   {}", text(&answer, "promoted"));
            }
            println!("new next key:  {}", text(&answer, "new_next"));
        }
    }
    if let Some(warning) = answer.get("warning").and_then(Value::as_str) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}
