//! Byte sizes in configuration and flags, read exactly as the REST API reads
//! them (one rule everywhere): plain bytes, or a number (fractions allowed)
//! with a unit; `KiB`/`MiB`/`GiB`/`TiB`/`PiB` and the bare `k`/`m`/`g`/`t`/`p`
//! are powers of 1024, `KB`/`MB`/`GB`/`TB`/`PB` powers of 1000.

/// Parses `"16GiB"`, `"1.5 GiB"`, `"512 MiB"`, `"1g"`, `"10GB"`, `"4096"`
/// (bytes) into a byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    mgmt_api::domain::rules::parse_size(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_the_rest_api_parses_them() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16GiB"), Ok(16 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999999TiB").is_err());
        assert!(parse_size("0.3 B").is_err(), "not a whole number of bytes");
    }
}
