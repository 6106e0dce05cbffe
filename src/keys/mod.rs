//! Keys: algorithms, private material, public JWKs, certificates, sealing at rest, and the
//! [`Signer`] (a key and its kid) that assertions are signed with.
//!
//! Nothing in here knows about storage, HTTP or time zones; it turns bytes into keys and
//! keys into bytes.

pub mod alg;
pub mod cert;
pub mod jwk;
pub mod material;
pub mod seal;
pub mod signer;

pub use alg::{Algorithm, Curve, KeyFamily, RsaBits};
pub use jwk::PublicJwk;
pub use material::{KeyError, KeyMaterial};
pub use seal::MasterKey;
pub use signer::Signer;
