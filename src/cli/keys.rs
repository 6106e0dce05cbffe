//! `jwksd keys list|rotate|revoke`: the admin API's key operations, printed as a table or
//! (`--json`) as the answer itself.

use super::client::pretty;
use super::{AdminArgs, KeysCommand};
use crate::api::{GateState, Schedule};

/// A time or name that may be absent, as the table shows it.
fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// Runs one `keys` subcommand.
pub async fn run(args: &AdminArgs, command: KeysCommand) -> anyhow::Result<()> {
    let client = args.client()?;
    match command {
        KeysCommand::List { keyset } => {
            let answer = client.keys(&keyset).await?;
            if args.json {
                println!("{}", pretty(&answer)?);
                return Ok(());
            }
            println!(
                "{:<44} {:<8} {:<6} {:<21} {:<21} {:<21} {:<21}",
                "KID", "STATE", "ALG", "PUBLISHED", "ACTIVATED", "LEAVES JWKS", "REVOKED"
            );
            for key in &answer.keys {
                println!(
                    "{:<44} {:<8} {:<6} {:<21} {:<21} {:<21} {:<21}",
                    key.kid,
                    key.state.as_str(),
                    key.alg,
                    or_dash(key.published_at.as_deref()),
                    or_dash(key.activated_at.as_deref()),
                    or_dash(key.remove_at.as_deref()),
                    or_dash(key.revoked_at.as_deref()),
                );
            }
            // After the table, so that it still starts the output for scripts that read it.
            if let Some(schedule) = &answer.schedule {
                println!();
                for line in schedule_lines(schedule) {
                    println!("{line}");
                }
            }
        }
        KeysCommand::Rotate { keyset, force } => {
            let answer = client.rotate(&keyset, force).await?;
            if args.json {
                println!("{}", pretty(&answer)?);
                return Ok(());
            }
            println!("now signing:   {}", answer.promoted);
            println!("retired:       {}", or_dash(answer.retired.as_deref()));
            println!("new next key:  {}", or_dash(answer.new_next.as_deref()));
            warn(answer.warning.as_deref());
        }
        KeysCommand::Revoke { kid, reason } => {
            let answer = client.revoke(&kid, reason).await?;
            if args.json {
                println!("{}", pretty(&answer)?);
                return Ok(());
            }
            println!("revoked:       {}", answer.revoked);
            if let Some(promoted) = &answer.promoted {
                println!("now signing:   {promoted}");
            }
            println!("new next key:  {}", or_dash(answer.new_next.as_deref()));
            warn(answer.warning.as_deref());
        }
    }
    Ok(())
}

/// The key set's next changes, for people: the next rotation (and what it waits for) and
/// the next removal.
fn schedule_lines(schedule: &Schedule) -> Vec<String> {
    let gate = &schedule.rotation_gate;
    let deadline = or_dash(gate.deadline_at.as_deref());
    let rotation = match (schedule.next_rotation_at.as_deref(), gate.state) {
        (None, _) => "manual only (rotation_period = \"off\")".to_owned(),
        (Some(at), GateState::Waiting) => format!(
            "due since {at}, waiting until the next key has reached {} (at the latest {deadline})",
            gate.unseen_by.join("; ")
        ),
        (Some(at), GateState::DeadlinePassed) => format!(
            "due since {at}; rotation_deadline {deadline} passed, rotating without {}",
            gate.unseen_by.join("; ")
        ),
        (Some(at), _) => at.to_owned(),
    };
    let mut lines = vec![
        format!("next rotation: {rotation}"),
        format!(
            "next removal:  {}",
            or_dash(schedule.next_removal_at.as_deref())
        ),
    ];
    if gate.state == GateState::NotDue && !gate.unseen_by.is_empty() {
        lines.push(format!(
            "not yet served the next key: {}",
            gate.unseen_by.join("; ")
        ));
    }
    lines
}

fn warn(warning: Option<&str>) {
    if let Some(warning) = warning {
        eprintln!("warning: {warning}");
    }
}
