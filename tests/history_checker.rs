//! The register history checker's own rules (`tests/common/history.rs`),
//! checked once here rather than in every test binary that includes `common`.

mod common;

use common::history::*;

fn w(register: u64, value: u64, span: (u64, u64), outcome: Outcome) -> Write {
    Write {
        register,
        value,
        invoked_ns: span.0,
        completed_ns: span.1,
        outcome,
        client: "w".into(),
    }
}

fn r(register: u64, observed: Observed, span: (u64, u64)) -> Read {
    Read {
        register,
        observed,
        invoked_ns: span.0,
        completed_ns: span.1,
        client: "r".into(),
    }
}

fn reasons(writes: &[Write], reads: &[Read]) -> Vec<String> {
    match check(writes, reads) {
        Ok(()) => Vec::new(),
        Err(v) => v.into_iter().map(|v| v.reason).collect(),
    }
}

#[test]
fn a_read_of_the_last_acknowledged_value_passes() {
    let writes = [
        w(0, 1, (0, 10), Outcome::Acked),
        w(0, 2, (20, 30), Outcome::Acked),
    ];
    let reads = [
        r(0, Observed::Initial, (0, 5)),
        r(0, Observed::Value(1), (12, 18)),
        r(0, Observed::Value(2), (40, 50)),
    ];
    assert_eq!(reasons(&writes, &reads), Vec::<String>::new());
}

#[test]
fn a_stale_read_is_rejected() {
    let writes = [
        w(0, 1, (0, 10), Outcome::Acked),
        w(0, 2, (20, 30), Outcome::Acked),
    ];
    let reads = [r(0, Observed::Value(1), (40, 50))];
    let found = reasons(&writes, &reads);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("stale: value 1"), "{found:?}");
}

#[test]
fn a_concurrent_write_may_or_may_not_be_seen() {
    let writes = [
        w(0, 1, (0, 10), Outcome::Acked),
        w(0, 2, (20, 60), Outcome::Acked),
    ];
    let reads = [
        r(0, Observed::Value(1), (30, 40)),
        r(0, Observed::Value(2), (30, 40)),
    ];
    assert_eq!(reasons(&writes, &reads), Vec::<String>::new());
}

#[test]
fn overlapping_writes_may_land_in_either_order() {
    // Value 1 acknowledged last, but its write overlapped value 2's: either
    // may be the register's value afterwards.
    let writes = [
        w(0, 1, (0, 30), Outcome::Acked),
        w(0, 2, (10, 20), Outcome::Acked),
    ];
    let reads = [r(0, Observed::Value(2), (40, 50))];
    assert_eq!(reasons(&writes, &reads), Vec::<String>::new());
}

#[test]
fn an_unknown_write_stays_possible_forever_but_never_supersedes() {
    let writes = [
        w(0, 1, (0, 10), Outcome::Acked),
        w(0, 2, (20, 30), Outcome::Unknown),
    ];
    let reads = [
        r(0, Observed::Value(2), (1_000, 1_010)),
        r(0, Observed::Value(1), (40, 50)),
    ];
    assert_eq!(reasons(&writes, &reads), Vec::<String>::new());
}

#[test]
fn a_failed_write_and_a_future_write_are_never_seen() {
    let writes = [
        w(0, 1, (0, 10), Outcome::Failed),
        w(0, 2, (100, 110), Outcome::Acked),
    ];
    let reads = [
        r(0, Observed::Value(1), (20, 30)),
        r(0, Observed::Value(2), (40, 50)),
    ];
    let found = reasons(&writes, &reads);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].contains("known to have failed"));
    assert!(found[1].contains("only after the read"));
}

#[test]
fn zeros_after_an_acknowledged_write_are_rejected() {
    let writes = [w(0, 1, (0, 10), Outcome::Acked)];
    let reads = [r(0, Observed::Initial, (20, 30))];
    assert_eq!(reasons(&writes, &reads).len(), 1);
    // An unknown write does not make zeros wrong.
    let writes = [w(0, 1, (0, 10), Outcome::Unknown)];
    assert_eq!(reasons(&writes, &reads), Vec::<String>::new());
}

#[test]
fn garbage_and_values_of_other_registers_are_rejected() {
    let writes = [w(1, 7, (0, 10), Outcome::Acked)];
    let reads = [
        r(0, Observed::Garbage, (20, 30)),
        r(0, Observed::Value(7), (20, 30)),
    ];
    assert_eq!(reasons(&writes, &reads).len(), 2);
}

#[test]
fn a_value_that_disappears_between_reads_is_rejected() {
    // Value 2's write is of unknown outcome: each read alone is allowed,
    // but once a read saw 2, a later read cannot see the older 1 again.
    let writes = [
        w(0, 1, (0, 10), Outcome::Acked),
        w(0, 2, (20, 30), Outcome::Unknown),
    ];
    let reads = [
        r(0, Observed::Value(2), (40, 50)),
        r(0, Observed::Value(1), (60, 70)),
    ];
    let found = reasons(&writes, &reads);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("went back"), "{found:?}");
    // In the other order (1 then 2) it is fine.
    let reads = [
        r(0, Observed::Value(1), (40, 50)),
        r(0, Observed::Value(2), (60, 70)),
    ];
    assert_eq!(reasons(&writes, &reads), Vec::<String>::new());
}

#[test]
fn blocks_decode_to_what_was_encoded() {
    let block = encode(3, 99, 4096);
    assert_eq!(decode(3, &block), Observed::Value(99));
    assert_eq!(decode(4, &block), Observed::Garbage, "another register");
    assert_eq!(decode(3, &[0u8; 4096]), Observed::Initial);
    let mut torn = block.to_vec();
    torn[4000] ^= 1;
    assert_eq!(decode(3, &torn), Observed::Garbage);
}
