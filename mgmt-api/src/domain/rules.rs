//! The documents' validation rules: resource names, sizes, sector sizes, replica
//! counts, ACL entries and labels. Pure functions, no state.

use std::net::IpAddr;

/// Longest resource name the documents allow.
pub const NAME_LEN_MAX: usize = 256;
/// Longest description the documents allow.
pub const DESCRIPTION_LEN_MAX: usize = 256;
/// Longest retention period a snapshot request may carry.
pub const RETENTION_LEN_MAX: usize = 64;
/// Most labels one volume may carry.
pub const LABELS_MAX: usize = 64;
/// Longest label key or value.
pub const LABEL_LEN_MAX: usize = 256;
/// Most entries of one ACL or IP ACL.
pub const ACL_ENTRIES_MAX: usize = 256;
/// Longest host NQN (NVMe base spec 4.5: NQNs are at most 223 bytes).
pub const NQN_LEN_MAX: usize = 223;
/// The ACL value that lets every host see a volume.
pub const ALLOW_ANY: &str = "ALLOW_ANY";
/// The ACL value that hides a volume from every host.
pub const ALLOW_NONE: &str = "ALLOW_NONE";

/// What a caller who is not the cluster admin must say: which project.
pub const PROJECT_MANDATORY: &str = "projectName is mandatory unless you are the cluster admin";

/// The answer to a request without `field`, which it must carry.
pub fn mandatory(field: &str) -> String {
    format!("{field} is mandatory")
}

/// A field the request must carry: its value, or [`mandatory`]'s answer.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T, String> {
    value.ok_or_else(|| mandatory(field))
}

/// The project a request names, or `default` for the cluster admin, who may
/// omit it; anyone else must name one ([`PROJECT_MANDATORY`]).
pub fn project_or_default(project: Option<String>, cluster_admin: bool) -> Result<String, String> {
    match project {
        Some(p) => Ok(p),
        None if cluster_admin => Ok(super::model::DEFAULT_PROJECT.to_owned()),
        None => Err(PROJECT_MANDATORY.to_owned()),
    }
}

/// Checks a resource name: 1–256 letters, digits, hyphens, underscores or periods,
/// and neither `.` nor `..`, which name directories wherever a name becomes a
/// path component (a file, a URL path segment, a key in another system).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name == "." || name == ".." {
        return Err(format!("{what} must not be {name:?}"));
    }
    if name.len() > NAME_LEN_MAX {
        return Err(format!("{what} is longer than {NAME_LEN_MAX} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{what} contains the illegal character {c:?}; only letters, digits, hyphen, underscore and period are allowed"
        ));
    }
    Ok(())
}

/// Checks a free-text description: at most 256 characters, no control characters.
pub fn check_description(text: &str) -> Result<(), String> {
    if text.chars().count() > DESCRIPTION_LEN_MAX {
        return Err(format!(
            "description is longer than {DESCRIPTION_LEN_MAX} characters"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("description contains control characters".to_owned());
    }
    Ok(())
}

/// Parses a size: plain bytes ("1073741824") or a number with a unit ("1 gib",
/// "10GiB", "1.5 TiB", "500 mb"). Binary units are powers of 1024, decimal ones
/// of 1000; a bare `k`/`m`/`g`/`t`/`p` is binary. The result must be a whole,
/// positive number of bytes that fits in 64 bits.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let multiplier: u128 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        _ => return Err(format!("size {text:?} has an unknown unit {unit:?}")),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty()
        || fraction.contains('.')
        || whole.len() > 20
        || fraction.len() > 18
    {
        return Err(format!("size {text:?} is not a positive number of bytes"));
    }
    let parse = |digits: &str| -> Result<u128, String> {
        if digits.is_empty() {
            Ok(0)
        } else {
            digits
                .parse::<u128>()
                .map_err(|_| format!("size {text:?} is not a positive number of bytes"))
        }
    };
    let scale = 10u128
        .pow(u32::try_from(fraction.len()).map_err(|_| "size has too many digits".to_owned())?);
    let numerator = parse(whole)? * scale + parse(fraction)?;
    let bytes = numerator * multiplier;
    if !is_multiple(bytes, scale) {
        return Err(format!("size {text:?} is not a whole number of bytes"));
    }
    let bytes = bytes / scale;
    if bytes == 0 {
        return Err(format!("size {text:?} must be positive"));
    }
    u64::try_from(bytes).map_err(|_| format!("size {text:?} is too large"))
}

/// Whether `value` is a whole multiple of `unit` (false for a zero unit).
/// Written with `checked_rem` because `is_multiple_of` is newer than the MSRV.
pub fn is_multiple<T: CheckedRem>(value: T, unit: T) -> bool {
    value.rem_is_zero(unit)
}

/// Integers [`is_multiple`] accepts.
pub trait CheckedRem: Copy {
    /// `self % unit == 0`, false when `unit` is zero.
    fn rem_is_zero(self, unit: Self) -> bool;
}

impl CheckedRem for u64 {
    fn rem_is_zero(self, unit: Self) -> bool {
        self.checked_rem(unit) == Some(0)
    }
}

impl CheckedRem for u128 {
    fn rem_is_zero(self, unit: Self) -> bool {
        self.checked_rem(unit) == Some(0)
    }
}

/// Checks a sector size: 512 or 4096 bytes.
pub fn check_sector_size(bytes: u32) -> Result<(), String> {
    match bytes {
        512 | 4096 => Ok(()),
        other => Err(format!(
            "sectorSize {other} is invalid; it must be 512 or 4096"
        )),
    }
}

/// Checks a replica count: 1–3 as the documents say, and no more than the cluster
/// can place.
pub fn check_replica_count(count: u32, cluster_max: u32) -> Result<(), String> {
    if !(1..=3).contains(&count) {
        return Err(format!(
            "replicaCount {count} is outside the valid range 1-3"
        ));
    }
    if count > cluster_max {
        return Err(format!(
            "replicaCount {count} exceeds the cluster's maximum of {cluster_max} replicas"
        ));
    }
    Ok(())
}

/// Checks a host ACL: `ALLOW_ANY` or `ALLOW_NONE` alone, or a list of host NQNs.
pub fn check_host_acl(values: &[String]) -> Result<(), String> {
    check_acl_shape("acl", values)?;
    for v in values.iter().filter(|v| !is_acl_keyword(v)) {
        let valid = v.starts_with("nqn.")
            && v.len() <= NQN_LEN_MAX
            && v.chars().all(|c| c.is_ascii_graphic());
        if !valid {
            return Err(format!("acl value {v:?} is not a host NQN (nqn.*, printable ASCII, at most {NQN_LEN_MAX} bytes), ALLOW_ANY or ALLOW_NONE"));
        }
    }
    Ok(())
}

/// Checks an IP ACL: `ALLOW_ANY` or `ALLOW_NONE` alone, or IP addresses / CIDR blocks.
pub fn check_ip_acl(values: &[String]) -> Result<(), String> {
    check_acl_shape("ipAcl", values)?;
    for v in values.iter().filter(|v| !is_acl_keyword(v)) {
        let (addr, prefix) = match v.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (v.as_str(), None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("ipAcl value {v:?} is not an IP address or CIDR block"))?;
        if let Some(p) = prefix {
            let bits: u8 = p
                .parse()
                .map_err(|_| format!("ipAcl value {v:?} has an invalid prefix length"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return Err(format!(
                    "ipAcl value {v:?} has a prefix longer than {max} bits"
                ));
            }
        }
    }
    Ok(())
}

fn is_acl_keyword(v: &str) -> bool {
    v == ALLOW_ANY || v == ALLOW_NONE
}

fn check_acl_shape(what: &str, values: &[String]) -> Result<(), String> {
    if values.len() > ACL_ENTRIES_MAX {
        return Err(format!("{what} has more than {ACL_ENTRIES_MAX} values"));
    }
    if values.len() > 1 && values.iter().any(|v| is_acl_keyword(v)) {
        return Err(format!(
            "{what}: ALLOW_ANY and ALLOW_NONE must be the only value"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = values.iter().find(|v| !seen.insert(v.as_str())) {
        return Err(format!("{what} lists {dup:?} twice"));
    }
    Ok(())
}

/// Checks labels: at most 64, unique non-empty keys, no control characters.
pub fn check_labels(labels: &[(String, String)]) -> Result<(), String> {
    if labels.len() > LABELS_MAX {
        return Err(format!("more than {LABELS_MAX} labels"));
    }
    let mut seen = std::collections::HashSet::new();
    for (key, value) in labels {
        if key.is_empty()
            || key.chars().count() > LABEL_LEN_MAX
            || value.chars().count() > LABEL_LEN_MAX
        {
            return Err(format!("label keys must be 1-{LABEL_LEN_MAX} characters and values at most {LABEL_LEN_MAX}"));
        }
        if key.chars().chain(value.chars()).any(char::is_control) {
            return Err("labels must not contain control characters".to_owned());
        }
        if !seen.insert(key.as_str()) {
            return Err(format!("label key {key:?} appears twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documents() {
        assert!(check_name("name", "vol-1_a.b").is_ok());
        assert!(check_name("name", &"a".repeat(256)).is_ok());
        assert!(check_name("name", &"a".repeat(257)).is_err());
        assert!(check_name("name", "").is_err());
        for bad in ["a/b", "a b", "völ", "a\\b", "a\0", "💾", ".", ".."] {
            assert!(check_name("name", bad).is_err(), "{bad:?} accepted");
        }
        for dotted in [".a", "a.", "...", "..a", ".-", "a..b"] {
            assert!(check_name("name", dotted).is_ok(), "{dotted:?} refused");
        }
    }

    #[test]
    fn sizes_accept_bytes_and_units() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        for bad in [
            "",
            "0",
            "-1",
            "1.5",
            "abc",
            "1 zb",
            "1..2",
            "99999999999999999999999",
            "1e9",
            "18446744073709551616",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn replica_count_is_bounded_by_the_cluster() {
        assert!(check_replica_count(1, 1).is_ok());
        assert!(check_replica_count(2, 1).is_err());
        assert!(check_replica_count(0, 3).is_err());
        assert!(check_replica_count(4, 3).is_err());
    }

    #[test]
    fn acls_take_keywords_alone_or_nqns() {
        assert!(check_host_acl(&["ALLOW_ANY".into()]).is_ok());
        assert!(check_host_acl(&["nqn.2014-08.org.nvmexpress:uuid:1".into()]).is_ok());
        assert!(check_host_acl(&["ALLOW_ANY".into(), "nqn.x".into()]).is_err());
        assert!(check_host_acl(&["host1".into()]).is_err());
        assert!(check_ip_acl(&["10.0.0.0/8".into(), "::1".into()]).is_ok());
        assert!(check_ip_acl(&["10.0.0.0/33".into()]).is_err());
        assert!(check_ip_acl(&["example.com".into()]).is_err());
    }

    #[test]
    fn labels_reject_duplicates() {
        assert!(check_labels(&[("a".into(), "1".into()), ("b".into(), String::new())]).is_ok());
        assert!(check_labels(&[("a".into(), "1".into()), ("a".into(), "2".into())]).is_err());
        assert!(check_labels(&[(String::new(), "1".into())]).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn parse_size_never_panics(text in "\\PC{0,40}") {
            let _ = parse_size(&text);
        }

        #[test]
        fn plain_byte_counts_round_trip(bytes in 1u64..) {
            prop_assert_eq!(parse_size(&bytes.to_string()), Ok(bytes));
        }

        #[test]
        fn gib_counts_scale_exactly(n in 1u64..(1 << 33)) {
            prop_assert_eq!(parse_size(&format!("{n} gib")), Ok(n << 30));
        }

        #[test]
        fn accepted_names_use_only_the_allowed_characters(name in "\\PC{0,300}") {
            if check_name("name", &name).is_ok() {
                prop_assert!(!name.is_empty() && name.len() <= NAME_LEN_MAX);
                prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
                prop_assert!(name != "." && name != "..");
            }
        }
    }

    #[test]
    fn mandatory_fields_and_the_default_project() {
        assert_eq!(required("name", Some(3)), Ok(3));
        assert_eq!(
            required::<u8>("name", None),
            Err("name is mandatory".to_owned())
        );
        assert_eq!(
            project_or_default(Some("p".into()), false),
            Ok("p".to_owned())
        );
        assert_eq!(project_or_default(None, true), Ok("default".to_owned()));
        assert_eq!(
            project_or_default(None, false),
            Err(PROJECT_MANDATORY.to_owned())
        );
    }
}
