//! JSON Schemas of the values the API accepts, for the OpenAPI document. Each
//! function describes what one decoder in `loose` or one rule in `domain::rules`
//! accepts, so generated clients and property-based testers send what the
//! server takes. The document is built from these functions (through
//! `#[schema(schema_with = ..)]` on the DTOs and the parameter policy in
//! `openapi`), never written by hand.
//!
//! Where a rule depends on other fields or on state (a size must be a multiple of
//! the volume's sector size; a replica count at most what the cluster places) the
//! schema states the part that holds on its own and the description says the rest.

use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder,
    Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;

use crate::domain::rules;

/// What `rules::check_name` accepts: 1–256 ASCII letters, digits, `.`, `_`, `-`,
/// but not `.` or `..`. Written without lookahead, which not every JSON Schema
/// regex engine has: a name starts with a non-period, or with one period and a
/// non-period, or with two periods and at least one more character.
pub const NAME_PATTERN: &str = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,255}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}|\\.\\.[A-Za-z0-9._-]{1,254})$";

/// Sizes as strings that `rules::parse_size` accepts: whole bytes (optionally
/// with `b`), or a whole number of binary or decimal units up to TiB/TB, small
/// enough never to overflow 64 bits. Fractions ("1.5 gib") are accepted too but
/// not described, since most fractions are not whole bytes.
pub const SIZE_PATTERN: &str =
    "^ *([1-9][0-9]{0,17} *[Bb]?|[1-9][0-9]{0,5} *[KkMmGgTt]([Ii]?[Bb])?) *$";

/// Booleans as strings that `loose::opt_bool` accepts ("True", "false", ...).
pub const BOOL_PATTERN: &str = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$";

/// Strings without control characters (what `char::is_control` rejects).
const NO_CONTROL_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// The size unit every volume accepts, whatever its sector size (the default,
/// and largest, sector size; 512-byte volumes also take multiples of 512).
const SIZE_UNIT_BYTES: u64 = 4096;

fn null() -> Schema {
    ObjectBuilder::new().schema_type(Type::Null).build().into()
}

fn nullable(schema: Schema, description: &str) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(schema)
        .item(null())
        .description(Some(description))
        .into()
}

fn name_string() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(NAME_PATTERN))
        .min_length(Some(1))
        .max_length(Some(rules::NAME_LEN_MAX))
        .build()
        .into()
}

fn uuid_string() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .build()
        .into()
}

/// A mandatory resource name.
pub fn name() -> RefOr<Schema> {
    let mut schema = name_string();
    if let Schema::Object(o) = &mut schema {
        o.description =
            Some("Name: 1-256 letters, digits, hyphens, underscores or periods".to_owned());
    }
    schema.into()
}

/// An optional resource name (`null` means absent).
pub fn optional_name() -> RefOr<Schema> {
    nullable(
        name_string(),
        "Name: 1-256 letters, digits, hyphens, underscores or periods; null means absent",
    )
}

/// A parameter or field that is a name (for parameters, which cannot be null).
pub fn name_parameter() -> Schema {
    name_string()
}

/// A parameter that is a UUID.
pub fn uuid_parameter() -> Schema {
    uuid_string()
}

/// An optional UUID (`null` or `""` mean absent).
pub fn optional_uuid() -> RefOr<Schema> {
    let empty = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(0))
        .build();
    OneOfBuilder::new()
        .item(uuid_string())
        .item(empty)
        .item(null())
        .description(Some("A UUID; null or an empty string mean absent"))
        .into()
}

/// A mandatory UUID.
pub fn uuid() -> RefOr<Schema> {
    uuid_string().into()
}

/// An optional size: a string of bytes, a string with a unit, or a number of
/// bytes. It must be a multiple of the volume's sector size (512 or 4096).
pub fn optional_size() -> RefOr<Schema> {
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(SIZE_PATTERN))
        .examples(["1073741824", "1 gib", "10GiB"])
        .build();
    let number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(SIZE_UNIT_BYTES))
        .maximum(Some(u64::MAX - (u64::MAX % SIZE_UNIT_BYTES)))
        .multiple_of(Some(SIZE_UNIT_BYTES))
        .build();
    OneOfBuilder::new()
        .item(text)
        .item(number)
        .item(null())
        .description(Some(
            "Size in bytes: a string of bytes (\"1073741824\"), a number with a binary or decimal unit \
             (\"1 gib\", \"500 MB\"), or a JSON number; a positive multiple of the sector size \
             (4096 always fits; 512-byte-sector volumes also take multiples of 512). null means absent",
        ))
        .into()
}

fn loose_count(min: u32, max: u32, description: &str) -> RefOr<Schema> {
    let number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .build();
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^ *[{min}-{max}] *$")))
        .build();
    OneOfBuilder::new()
        .item(number)
        .item(text)
        .item(null())
        .description(Some(description))
        .into()
}

/// An optional QoS rate: a non-negative integer (0 means no limit) as a
/// number or a numeric string.
pub fn optional_rate() -> RefOr<Schema> {
    let number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(crate::domain::qos::RATE_MAX))
        .build();
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^ *[0-9]{1,15} *$"))
        .build();
    OneOfBuilder::new()
        .item(number)
        .item(text)
        .item(null())
        .description(Some(
            "A rate (a number or a numeric string); 0 or null means no limit",
        ))
        .into()
}

/// An optional replica count: 1–3 as a number or a numeric string, at most the
/// cluster's `maxReplicas` (the served document narrows it with
/// [`optional_replica_count_up_to`]).
pub fn optional_replica_count() -> RefOr<Schema> {
    optional_replica_count_up_to(REPLICAS_MAX)
}

/// An optional replica count from 1 to `cluster_max` (and at most 3).
pub fn optional_replica_count_up_to(cluster_max: u32) -> RefOr<Schema> {
    loose_count(
        1,
        cluster_max.clamp(1, REPLICAS_MAX),
        "Replica count 1-3 (a number or a numeric string), at most the cluster's maxReplicas; null means absent",
    )
}

/// Most replicas the documents allow.
const REPLICAS_MAX: u32 = 3;

/// An optional sector size: 512 or 4096, as a number or a string.
pub fn optional_sector_size() -> RefOr<Schema> {
    let number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .enum_values(Some([512, 4096]))
        .build();
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["512", "4096"]))
        .build();
    OneOfBuilder::new()
        .item(number)
        .item(text)
        .item(null())
        .description(Some(
            "Sector size in bytes, 512 or 4096 (a number or a string); null means absent",
        ))
        .into()
}

/// An optional boolean: `true`/`false` or the strings "True"/"False" (any case).
pub fn optional_bool() -> RefOr<Schema> {
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(BOOL_PATTERN))
        .build();
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean).build())
        .item(text)
        .item(null())
        .description(Some(
            "A boolean, or the string \"True\" or \"False\" (any case); null means absent",
        ))
        .into()
}

/// A string of at most `max_len` characters without control characters.
fn plain_text(max_len: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(max_len))
        .pattern(Some(NO_CONTROL_PATTERN))
}

/// An optional free text of at most 256 characters without control characters.
pub fn optional_description() -> RefOr<Schema> {
    nullable(
        plain_text(rules::DESCRIPTION_LEN_MAX).build().into(),
        "Free text, at most 256 characters, no control characters; null means absent",
    )
}

/// The values of an ACL: `ALLOW_ANY` or `ALLOW_NONE` alone, or up to 256
/// distinct entries (host NQNs for `acl`, IP addresses or CIDR blocks for `ipAcl`).
pub fn acl_values() -> RefOr<Schema> {
    let keyword = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([rules::ALLOW_ANY, rules::ALLOW_NONE]))
        .build();
    let alone = ArrayBuilder::new()
        .items(keyword)
        .min_items(Some(1))
        .max_items(Some(1));
    let entry = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(rules::NQN_LEN_MAX))
        .pattern(Some("^[!-~]+$"))
        .build();
    let entries = ArrayBuilder::new()
        .items(entry)
        .max_items(Some(rules::ACL_ENTRIES_MAX))
        .unique_items(true);
    // anyOf, not oneOf: `["ALLOW_ANY"]` matches both shapes.
    AnyOfBuilder::new()
        .item(alone.build())
        .item(entries.build())
        .item(null())
        .description(Some(
            "ALLOW_ANY or ALLOW_NONE alone, or distinct entries: host NQNs (nqn.*) for acl, \
             IP addresses or CIDR blocks for ipAcl; null means none",
        ))
        .into()
}

/// An optional host ACL as requests send it: `{"values": [...]}` with
/// `ALLOW_ANY` or `ALLOW_NONE` alone, or distinct host NQNs.
pub fn optional_host_acl() -> RefOr<Schema> {
    let nqn = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(
            "^nqn\\.[!-~]{{1,{}}}$",
            rules::NQN_LEN_MAX - 4
        )))
        .build();
    acl_object(
        nqn.into(),
        "Host ACL: {\"values\": [\"ALLOW_ANY\"]}, [\"ALLOW_NONE\"], or distinct host NQNs; null means the default",
    )
}

/// An optional IP ACL as requests send it: `{"values": [...]}` with
/// `ALLOW_ANY` or `ALLOW_NONE` alone, or distinct IP addresses / CIDR blocks.
pub fn optional_ip_acl() -> RefOr<Schema> {
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
    let cidr = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(
            "^{octet}(\\.{octet}){{3}}/(3[0-2]|[12]?[0-9])$"
        )))
        .build();
    let address = AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv4)))
                .build(),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Ipv6)))
                .build(),
        )
        .item(cidr)
        .build();
    acl_object(
        address.into(),
        "IP ACL: {\"values\": [\"ALLOW_ANY\"]}, [\"ALLOW_NONE\"], or distinct IP addresses and IPv4 CIDR blocks; null means the default",
    )
}

fn acl_object(entry: Schema, description: &str) -> RefOr<Schema> {
    let keyword = ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some([rules::ALLOW_ANY, rules::ALLOW_NONE]))
        .build();
    let alone = ArrayBuilder::new()
        .items(keyword)
        .min_items(Some(1))
        .max_items(Some(1));
    let entries = ArrayBuilder::new()
        .items(RefOr::T(entry))
        .max_items(Some(rules::ACL_ENTRIES_MAX))
        .unique_items(true);
    let values = AnyOfBuilder::new()
        .item(alone.build())
        .item(entries.build())
        .item(null());
    let object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("values", values)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .build();
    nullable(object.into(), description)
}

/// A label key: 1–256 characters, no control characters.
pub fn label_key() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(rules::LABEL_LEN_MAX))
        .min_length(Some(1))
        .pattern(Some(NO_CONTROL_PATTERN))
        .description(Some(
            "1-256 characters, no control characters; unique per volume",
        ))
        .into()
}

/// A label value: at most 256 characters, no control characters.
pub fn label_value() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(rules::LABEL_LEN_MAX))
        .pattern(Some(NO_CONTROL_PATTERN))
        .description(Some("At most 256 characters, no control characters"))
        .into()
}

/// A mandatory free text (may be empty): at most 256 characters, no control
/// characters.
pub fn description() -> RefOr<Schema> {
    plain_text(rules::DESCRIPTION_LEN_MAX)
        .description(Some(
            "Free text, at most 256 characters, no control characters",
        ))
        .into()
}

/// An optional retention period (informational): at most 64 characters, no
/// control characters.
pub fn optional_retention() -> RefOr<Schema> {
    nullable(
        plain_text(rules::RETENTION_LEN_MAX).build().into(),
        "Retention period as given (e.g. \"86400s\"), at most 64 characters; null means absent",
    )
}

/// A user role.
pub fn role() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["ClusterAdmin", "ProjectAdmin", "ProjectViewer"]))
        .description(Some(
            "ClusterAdmin, or ProjectAdmin / ProjectViewer together with projectName",
        ))
        .into()
}

/// A service credential's key type.
pub fn key_type() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["rsa256pubkey", "ec256pubkey"]))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_pattern_bound_is_the_rule_bound() {
        let max = rules::NAME_LEN_MAX;
        assert_eq!(
            NAME_PATTERN,
            format!(
                "^([A-Za-z0-9_-][A-Za-z0-9._-]{{0,{}}}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{}}}|\\.\\.[A-Za-z0-9._-]{{1,{}}})$",
                max - 1,
                max - 2,
                max - 2
            )
        );
    }

    proptest::proptest! {
        #[test]
        fn the_name_pattern_accepts_exactly_the_names_the_rule_accepts(
            name in "[A-Za-z0-9._/ -]{0,4}|[.]{1,3}|[a.]{250,260}",
        ) {
            let pattern = regex::Regex::new(NAME_PATTERN).unwrap();
            proptest::prop_assert_eq!(
                pattern.is_match(&name),
                rules::check_name("name", &name).is_ok(),
                "{:?}", name
            );
        }
    }

    #[test]
    fn the_largest_described_sizes_parse_without_overflow() {
        // The pattern's extremes: 18 digits of bytes, 6 digits of TiB or TB.
        for text in [
            "9".repeat(18),
            format!("{} b", "9".repeat(18)),
            "999999 TiB".to_owned(),
            "999999tb".to_owned(),
            "1 k".to_owned(),
            "10GiB".to_owned(),
        ] {
            assert!(rules::parse_size(&text).is_ok(), "{text}");
        }
    }
}
