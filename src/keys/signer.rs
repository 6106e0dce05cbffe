//! The signing half of a key set at one instant: the key that signs now, and its kid.

use super::KeyMaterial;

/// The key a key set signs with now.
#[derive(Debug)]
pub struct Signer {
    pub kid: String,
    pub key: KeyMaterial,
}
