//! `/login` is reachable without credentials and each password check costs an
//! argon2 hash: at most a few hashes run at once however many logins arrive,
//! and a client that keeps failing is locked out without a hash while other
//! clients still log in.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::{assert_error_body, basic, Harness};
use mgmt_api::auth::gate::FAILURES_FREE;
use mgmt_api::auth::PasswordCost;
use reqwest::StatusCode;
use serde_json::Value;

/// Concurrent wrong-password logins in the burst.
const BURST: usize = 64;
/// Hash slots the server is given.
const HASHES_MAX: usize = 2;

/// A client whose connections come from `source` (any 127/8 address is local).
fn client_from(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .local_address(source)
        .build()
        .unwrap()
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/login"))
        .header("Authorization", basic(user, password))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_wrong_password_logins_never_runs_more_hashes_than_the_bound() {
    let h = Harness::start_with(|c| {
        // Dear enough that hashes of a burst overlap, cheap enough for a test.
        c.auth.password_cost = PasswordCost {
            memory_kib: 1024,
            iterations: 1,
        };
        c.auth.password_hashes_max = HASHES_MAX;
        c.auth.login_queue_max = 16;
    })
    .await;
    let auth = h.server.as_ref().unwrap().auth().clone();
    let before = auth.hash_stats();

    // Each login from its own client (own connection) and its own address, so
    // no lockout cuts the burst short: only the hash bound is at work.
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let base = h.base.clone();
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, u8::try_from(i + 1).unwrap()));
        burst.spawn(async move {
            let resp = login(&client_from(source), &base, "admin", &format!("wrong-{i}")).await;
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap())
        });
    }
    let mut unauthenticated: u64 = 0;
    while let Some(answer) = burst.join_next().await {
        let (status, body) = answer.unwrap();
        assert_error_body(&body);
        match status {
            StatusCode::UNAUTHORIZED => unauthenticated += 1,
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("a wrong password answered {other}: {body}"),
        }
    }
    let after = auth.hash_stats();
    assert!(
        after.peak <= HASHES_MAX,
        "{} hashes ran at once; the bound is {HASHES_MAX}",
        after.peak
    );
    assert_eq!(after.running, 0);
    assert_eq!(
        after.total - before.total,
        unauthenticated,
        "one hash per password checked, none for a refused login"
    );
    assert!(
        unauthenticated >= HASHES_MAX as u64,
        "{unauthenticated} checked"
    );
    // The server still serves a correct login.
    let resp = login(&h.client, &h.base, "admin", &h.admin_password()).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_keeps_failing_is_locked_out_without_a_hash_and_others_still_log_in() {
    let h = Harness::start().await;
    let auth = h.server.as_ref().unwrap().auth().clone();
    let password = h.admin_password();
    let attacker = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    for i in 0..FAILURES_FREE {
        let resp = login(&attacker, &h.base, "admin", &format!("guess-{i}")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    // Locked out: even the right password is refused, and no hash is spent.
    let hashed = auth.hash_stats().total;
    for password in ["guess-again", password.as_str()] {
        let resp = login(&attacker, &h.base, "admin", password).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1, "Retry-After {retry_after}");
        let body: Value = resp.json().await.unwrap();
        assert_error_body(&body);
        assert_eq!(body["code"], 8, "RESOURCE_EXHAUSTED: {body}");
    }
    assert_eq!(auth.hash_stats().total, hashed, "a locked-out login hashed");
    // Another client logs in as the same user meanwhile.
    let resp = login(&h.client, &h.base, "admin", &password).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let other = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    let resp = login(&other, &h.base, "admin", &password).await;
    assert_eq!(resp.status(), StatusCode::OK);
}
