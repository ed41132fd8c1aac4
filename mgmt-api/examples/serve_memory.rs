//! Serves the API over the in-memory control on 127.0.0.1, for trying the API by
//! hand and for property-based API testing from `/openapi.json` (e.g. with
//! schemathesis). Not a product binary: data vanishes with the process.
//!
//! `cargo run -p mgmt-api --features test-support --example serve_memory -- DATA_DIR PORT [--plain] [--no-auth]`

use std::sync::Arc;

use mgmt_api::control::memory::MemoryControl;
use mgmt_api::{ApiConfig, ApiServer, TlsMode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: serve_memory DATA_DIR PORT [--plain] [--no-auth]")?;
    let port: u16 = args.get(2).map(|p| p.parse()).transpose()?.unwrap_or(0);
    let mut config = ApiConfig::new(([127, 0, 0, 1], port).into(), dir.into());
    if args.iter().any(|a| a == "--plain") {
        config.tls = TlsMode::PlainHttp;
    }
    config.auth.disabled = args.iter().any(|a| a == "--no-auth");
    let server = ApiServer::bind(config, Arc::new(MemoryControl::default())).await?;
    println!("{}", server.base_url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
