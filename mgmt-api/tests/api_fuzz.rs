//! The stable twin of the `rest_body` fuzz target: hostile requests through
//! the real router — every route and method, identifiers that exist, do not
//! or do not parse, odd queries, random bytes and damaged JSON bodies — never
//! panic the server or answer 500.

use std::sync::OnceLock;

use mgmt_api::fuzzing::RestFuzzer;
use proptest::prelude::*;

fn fuzzer() -> &'static RestFuzzer {
    static FUZZER: OnceLock<RestFuzzer> = OnceLock::new();
    FUZZER.get_or_init(RestFuzzer::new)
}

/// Bodies the documents' requests look like, to be damaged.
const BODIES: [&str; 8] = [
    r#"{"name":"v1","size":"1 gib","replicaCount":1,"acl":{"values":["ALLOW_ANY"]}}"#,
    r#"{"name":"c1","sourceSnapshotName":"s0","sourceSnapshotUUID":null}"#,
    r#"{"size":"2 gib","acl":{"values":["nqn.2014-08.org.nvmexpress:uuid:1"]},"ipAcl":{"values":["10.0.0.0/8"]}}"#,
    r#"{"name":"s1","sourceVolumeName":"v0","description":"d"}"#,
    r#"{"srcSnapshotUUID":"00000000-0000-0000-0000-000000000000"}"#,
    r#"{"src":{"snapId":"00000000-0000-0000-0000-000000000000"},"dst":{"name":"t"}}"#,
    r#"{"username":"admin","password":"x"}"#,
    r#"{"labels":[{"key":"k","value":"v"}],"compression":"True"}"#,
];

fn damaged_body() -> impl Strategy<Value = Vec<u8>> {
    (0..BODIES.len(), any::<u16>(), any::<u8>(), any::<bool>()).prop_map(
        |(i, at, byte, truncate)| {
            let mut body = BODIES[i].as_bytes().to_vec();
            let at = usize::from(at) % body.len();
            if truncate {
                body.truncate(at);
            } else {
                body[at] = byte;
            }
            body
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn hostile_requests_get_the_apis_own_errors(
        head in proptest::collection::vec(any::<u8>(), 4),
        body in prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), damaged_body()],
    ) {
        let mut input = head;
        input.extend(body);
        fuzzer().request(&input);
    }
}

#[test]
fn the_fuzzer_reaches_the_handlers() {
    // GET /api/v2/volumes (method 0, route 11) lists the seeded volume.
    assert_eq!(fuzzer().request(&[0, 11, 0, 0]).as_u16(), 200);
    // POST /api/v2/volumes with a valid body creates one.
    let mut create = vec![1, 11, 0, 0];
    create
        .extend_from_slice(br#"{"name":"made-by-fuzzer","size":"1 mib","projectName":"default"}"#);
    assert_eq!(fuzzer().request(&create).as_u16(), 200);
    // A body that is not JSON is the API's 400.
    let mut broken = vec![1, 11, 0, 0];
    broken.extend_from_slice(b"{\"name\":");
    assert_eq!(fuzzer().request(&broken).as_u16(), 400);
}
