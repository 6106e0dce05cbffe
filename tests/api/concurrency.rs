//! Writers and readers of the store at once: the audit writer (every assertion), the key
//! changes (rotations) and the reloads that follow them must never take one another's
//! fresh commits for tampering.

use serde_json::json;

use crate::helpers::spawn_app_with;
use crate::signing::{request_assertion, signing_config, BILLING_TOKEN, EXPORT_TOKEN};

#[tokio::test]
async fn signing_during_rotations_is_never_refused_as_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let app = std::sync::Arc::new(spawn_app_with(dir.path(), &signing_config("")).await);
    let mut signers = Vec::new();
    // Two callers, four tasks each: 480 requests a caller stay within its burst of 600.
    for n in 0..8 {
        let app = app.clone();
        let token = if n % 2 == 0 {
            BILLING_TOKEN
        } else {
            EXPORT_TOKEN
        };
        signers.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for _ in 0..120 {
                let response = request_assertion(&app, token, json!({"client_id": "ecw"})).await;
                let status = response.status().as_u16();
                if status != 200 {
                    refused.push(format!(
                        "signing {status}: {}",
                        response.text().await.unwrap()
                    ));
                }
            }
            refused
        }));
    }
    let mut refused = Vec::new();
    for _ in 0..40 {
        let response = app.rotate("default", true).await;
        let status = response.status().as_u16();
        if status != 200 {
            refused.push(format!(
                "rotation {status}: {}",
                response.text().await.unwrap()
            ));
        }
    }
    for signer in signers {
        refused.extend(signer.await.unwrap());
    }
    // After the storm the store still takes writes: one more of each.
    assert_eq!(app.rotate("default", true).await.status(), 200);
    let last = request_assertion(&app, BILLING_TOKEN, json!({"client_id": "ecw"})).await;
    assert_eq!(last.status(), 200, "{}", last.text().await.unwrap());
    assert!(
        refused.is_empty(),
        "{} refused, first: {:?}",
        refused.len(),
        refused.first()
    );
}
