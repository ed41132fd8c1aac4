//! Authentication and authorization: users with salted password hashes, login
//! with HTTP Basic, signed JWT bearer tokens carrying a role, and registered
//! public keys of other services whose tokens are accepted too.
//!
//! 401 means the caller could not be authenticated; 403 means the caller's role
//! does not allow the operation on that project.

pub mod gate;
mod password;
mod principal;
mod store;
mod token;

pub use gate::HashStats;
pub use principal::{Principal, Role};
pub use store::{AuthConfig, AuthError, Authenticator, CredentialInfo, PasswordCost};
pub use token::Claims;
