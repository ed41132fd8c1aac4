//! Argon2 password hashes as PHC strings, computed in memory each thread keeps
//! and reuses rather than allocates per hash.
//!
//! Why: a hash needs its whole cost in memory (19 MiB by default). Allocated
//! per hash, the freed blocks stay in the allocator's per-thread arenas,
//! fragmented by the small allocations made between hashes, and keeld's
//! resident size grew by several hashes' worth per thread that ever hashed.
//! Reused, a thread that hashes holds one block of the largest cost it has
//! seen, and only the password threads (`gate::HashPool`) hash at run time.

use std::cell::RefCell;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::store::PasswordCost;

thread_local! {
    /// This thread's argon2 memory; grows to the largest cost it hashed with.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Longest salt a PHC string may carry (the PHC format's limit).
const SALT_LEN_MAX: usize = 64;
/// Length of the hashes this module makes.
const OUTPUT_LEN: usize = 32;

/// Hashes with `argon` in this thread's memory.
fn hash_into(
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), String> {
    BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        let count = params.block_count();
        if blocks.len() < count {
            blocks.resize(count, Block::default());
        }
        argon
            .hash_password_into_with_memory(password, salt, out, &mut blocks[..count])
            .map_err(|e| e.to_string())
    })
}

/// A new Argon2id hash of `password` at `cost`, with a random salt.
pub fn hash(password: &str, cost: PasswordCost) -> Result<String, String> {
    let params = Params::new(cost.memory_kib, cost.iterations, 1, Some(OUTPUT_LEN))
        .map_err(|e| e.to_string())?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let mut salt_bytes = [0u8; SALT_LEN_MAX];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| e.to_string())?;
    let mut out = [0u8; OUTPUT_LEN];
    hash_into(&argon, &params, password.as_bytes(), salt_bytes, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored`, at the cost `stored`
/// names. Errors only on a malformed `stored`.
pub fn verify(password: &str, stored: &str) -> Result<bool, String> {
    let stored = PasswordHash::new(stored).map_err(|e| e.to_string())?;
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(|e| e.to_string())?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let params = Params::try_from(&stored).map_err(|e| e.to_string())?;
    let expected = stored.hash.ok_or("the stored hash has no output")?;
    let salt = stored.salt.ok_or("the stored hash has no salt")?;
    let mut salt_bytes = [0u8; SALT_LEN_MAX];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| e.to_string())?;
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    hash_into(&argon, &params, password.as_bytes(), salt_bytes, &mut out)?;
    let computed = Output::new(&out).map_err(|e| e.to_string())?;
    // Output's equality is constant-time.
    Ok(computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    const CHEAP: PasswordCost = PasswordCost {
        memory_kib: 64,
        iterations: 1,
    };

    #[test]
    fn hashes_verify_here_and_with_the_argon2_crate_and_the_other_way_round() {
        let ours = hash("secret", CHEAP).unwrap();
        assert!(verify("secret", &ours).unwrap());
        assert!(!verify("Secret", &ours).unwrap());
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"secret", &parsed)
            .is_ok());

        // Hashes made by earlier builds (the crate's own hasher) still verify.
        let params = Params::new(CHEAP.memory_kib, CHEAP.iterations, 1, None).unwrap();
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"secret", &salt)
            .unwrap()
            .to_string();
        assert!(verify("secret", &theirs).unwrap());
        assert!(!verify("wrong", &theirs).unwrap());
    }

    #[test]
    fn a_thread_reuses_its_memory_and_malformed_hashes_are_errors() {
        let dearer = PasswordCost {
            memory_kib: 2 * CHEAP.memory_kib,
            iterations: 1,
        };
        hash("a", dearer).unwrap();
        let held = BLOCKS.with(|b| b.borrow().len());
        assert_eq!(held, 128, "one 1 KiB block per KiB of cost");
        // A cheaper hash runs in the same memory instead of its own.
        let cheap = hash("b", CHEAP).unwrap();
        assert!(verify("b", &cheap).unwrap());
        assert_eq!(BLOCKS.with(|b| b.borrow().len()), held);
        for bad in ["", "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ", "plain"] {
            assert!(verify("x", bad).is_err(), "{bad:?}");
        }
    }
}
