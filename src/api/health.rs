//! `GET /healthz` and `GET /readyz` (both listeners).

use serde::{Deserialize, Serialize};

/// The answer of a health probe that passed: `{"status": "ok"}` from `/healthz`,
/// `{"status": "ready"}` from `/readyz`. A failed probe is a [`crate::api::Problem`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

impl Health {
    /// `/healthz`: the process answers.
    pub fn ok() -> Self {
        Health {
            status: "ok".into(),
        }
    }

    /// `/readyz`: the store commits and every key set can sign.
    pub fn ready() -> Self {
        Health {
            status: "ready".into(),
        }
    }
}
