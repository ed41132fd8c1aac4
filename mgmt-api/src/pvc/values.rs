//! PVC's request values: query-string arguments and HTML form fields alike,
//! for every method; flags that count by presence; sizes in bytes or with a
//! one-letter binary prefix; and `limit`, a fuzzy regular expression over
//! names.

use std::collections::HashMap;

use regex::Regex;

use super::reply::PvcError;

/// The values of one request, query string first: where a name appears in
/// both (or twice), the first occurrence counts, as Flask's `values` does.
#[derive(Debug, Default, Clone)]
pub struct Values(HashMap<String, String>);

impl Values {
    /// Merges the query string with an `application/x-www-form-urlencoded`
    /// body; any other body is not read for values (PVC reads form fields
    /// only).
    pub fn parse(query: Option<&str>, content_type: Option<&str>, body: &[u8]) -> Values {
        let mut values = HashMap::new();
        let mut add = |pairs: form_urlencoded::Parse<'_>| {
            for (name, value) in pairs {
                values
                    .entry(name.into_owned())
                    .or_insert_with(|| value.into_owned());
            }
        };
        if let Some(query) = query {
            add(form_urlencoded::parse(query.as_bytes()));
        }
        let is_form = content_type.is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if is_form {
            add(form_urlencoded::parse(body));
        }
        Values(values)
    }

    /// The value of `name`, if given.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name`, or a failure saying `missing`.
    pub fn required(&self, name: &str, missing: &str) -> Result<&str, PvcError> {
        self.text(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| PvcError::failure(format!("ERROR: {missing}")))
    }

    /// Whether the flag `name` was given (with any value or none).
    pub fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Binary multipliers of the one-letter size suffixes.
const UNITS: [(char, u64); 6] = [
    ('B', 1),
    ('K', 1 << 10),
    ('M', 1 << 20),
    ('G', 1 << 30),
    ('T', 1 << 40),
    ('P', 1 << 50),
];

/// Parses a size: plain bytes (`1073741824`) or a number with one binary
/// prefix letter (`4096M`, `20G`; either case).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let invalid = || {
        format!("'{text}' is not a valid size: give bytes or a number with one of the suffixes B, K, M, G, T, P")
    };
    let (digits, multiplier) = match text.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let unit = c.to_ascii_uppercase();
            let (_, m) = UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(invalid)?;
            (&text[..text.len() - 1], *m)
        }
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A size as PVC prints it: the smallest unit that shows it in at most four
/// digits, rounded up (`20G`, `1024M`).
pub fn human_size(bytes: u64) -> String {
    UNITS
        .iter()
        .map(|(unit, m)| (unit, bytes.div_ceil(*m)))
        .find(|(_, n)| *n <= 9999)
        .map_or_else(
            || format!("{}P", bytes.div_ceil(1 << 50)),
            |(unit, n)| format!("{n}{unit}"),
        )
}

/// Longest `limit` pattern taken.
const PATTERN_LEN_MAX: usize = 256;
/// Compiled-size bound on a `limit` pattern, so no request can make the
/// server build a huge automaton.
const PATTERN_SIZE_MAX: usize = 1 << 20;

/// Which names a listing keeps.
#[derive(Debug)]
pub enum NameFilter {
    /// Every name.
    All,
    /// Names the (fuzzy) pattern matches in full.
    Pattern(Regex),
    /// Exactly this name (the single-object GETs).
    Exact(String),
}

impl NameFilter {
    /// `limit` as PVC reads it: a regular expression that matches anywhere
    /// in a name unless it is anchored with `^` or `$`.
    pub fn fuzzy(limit: Option<&str>) -> Result<NameFilter, PvcError> {
        let Some(limit) = limit.filter(|l| !l.is_empty()) else {
            return Ok(NameFilter::All);
        };
        if limit.len() > PATTERN_LEN_MAX {
            return Err(PvcError::bad_request(format!(
                "limit is longer than {PATTERN_LEN_MAX} characters"
            )));
        }
        // Checked alone first, so an error points into the caller's text.
        regex::RegexBuilder::new(limit)
            .size_limit(PATTERN_SIZE_MAX)
            .build()
            .map_err(|e| PvcError::bad_request(format!("Regex Error: {e}")))?;
        let mut pattern = String::with_capacity(limit.len() + 8);
        if !limit.starts_with('^') {
            pattern.push_str(".*");
        }
        pattern.push_str(limit);
        if !limit.ends_with('$') {
            pattern.push_str(".*");
        }
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(PATTERN_SIZE_MAX)
            .build()
            .map(NameFilter::Pattern)
            .map_err(|e| PvcError::bad_request(format!("Regex Error: {e}")))
    }

    /// Whether `name` passes.
    pub fn keeps(&self, name: &str) -> bool {
        match self {
            NameFilter::All => true,
            NameFilter::Pattern(re) => re.is_match(name),
            NameFilter::Exact(exact) => exact == name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_counts_before_the_form_and_the_first_value_wins() {
        let v = Values::parse(
            Some("pool=a&size=1G&pool=b"),
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"pool=c&volume=v1&yes_i_really_mean_it",
        );
        assert_eq!(v.text("pool"), Some("a"));
        assert_eq!(v.text("volume"), Some("v1"));
        assert!(v.flag("yes_i_really_mean_it"));
        assert!(!v.flag("force"));
        let json = Values::parse(None, Some("application/json"), b"{\"pool\":\"x\"}");
        assert_eq!(json.text("pool"), None);
    }

    #[test]
    fn sizes_take_bytes_or_one_binary_prefix() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("4096M"), Ok(4096 << 20));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        for bad in ["", "G", "20GB", "1.5G", "-1G", "20X", "99999999999P"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn sizes_print_in_the_smallest_unit_of_four_digits() {
        assert_eq!(human_size(20 << 30), "20G");
        assert_eq!(human_size(1 << 30), "1024M");
        assert_eq!(human_size(4096), "4096B");
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(10_000), "10K");
    }

    #[test]
    fn limit_matches_anywhere_unless_anchored() {
        let f = NameFilter::fuzzy(Some("db")).unwrap_or(NameFilter::All);
        assert!(f.keeps("db1") && f.keeps("my-db") && !f.keeps("web"));
        let f = NameFilter::fuzzy(Some("^db")).unwrap_or(NameFilter::All);
        assert!(f.keeps("db1") && !f.keeps("my-db"));
        let f = NameFilter::fuzzy(Some("db$")).unwrap_or(NameFilter::All);
        assert!(f.keeps("my-db") && !f.keeps("db1"));
        assert!(NameFilter::fuzzy(Some("(")).is_err());
        assert!(NameFilter::fuzzy(Some(&"a".repeat(300))).is_err());
        assert!(NameFilter::fuzzy(Some("a{1000}{1000}")).is_err());
        assert!(matches!(NameFilter::fuzzy(Some("")), Ok(NameFilter::All)));
    }
}
