//! `mock-llm` binary: parse flags, bind, serve until Ctrl-C or SIGTERM.

use clap::Parser;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    common::logging::init();
    let config = mock_llm::Config::parse();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, chunks = config.chunks,
        interval_ms = config.interval_ms, ttft_ms = config.ttft_ms, itl_ms = config.itl_ms,
        tokens = config.tokens, jitter = config.jitter, heavy_tail = config.heavy_tail,
        fault = ?config.fault, fault_rate = config.fault_rate, "mock-llm listening");
    mock_llm::serve(listener, config, shutdown_signal()).await
}

async fn shutdown_signal() {
    common::signal::stop_requested().await;
    tracing::info!("mock-llm stopping");
}
