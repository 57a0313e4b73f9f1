//! `gateway` binary: read the settings, build the runtime with the configured blocking pool, serve.

use std::process::ExitCode;
use std::time::Duration;

/// jemalloc instead of glibc's malloc. A relayed request makes a few hundred small allocations
/// (header maps, boxed futures, body chunks) that live for a millisecond on whichever worker thread
/// polls them: jemalloc's thread caches make each one cheaper (callgrind: 251k → 208k
/// instructions per non-streamed request). And after 8,000 streams end, glibc keeps the freed
/// memory in its arenas, so the process stays at many times its idle RSS; jemalloc's background
/// thread returns dirty pages to the kernel about a second after they are freed
/// (`dirty_decay_ms`), so RSS follows the load down. Measured in issue 17's commits.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at start-up from this symbol (the crate's prefixed name for
/// `malloc_conf`). `unsafe_code` is allowed here only: exporting a symbol by name is how jemalloc
/// takes its configuration, and nothing else in the gateway needs it.
///
/// - `background_thread`, `dirty_decay_ms:1000`, `muzzy_decay_ms:0`: freed pages go back to the
///   kernel about a second after a load ends (above).
/// - `slab_sizes:8192-14336:16`: every held stream owns four 8 KiB buffers (hyper's read and
///   write buffers, on the client's connection and on the upstream one) and one 10 KiB block
///   (hyper's client dispatch channel). jemalloc's default slab for those sizes holds one or two
///   regions, so each buffer was an extent of its own, with its own descriptor: 44,000 at 8,000
///   streams, 5.6 MB of metadata jemalloc never returns, and an extent allocation per buffer.
///   16-page slabs hold four to eight. Measured with jemalloc's statistics and callgrind: 1.7 MB
///   of descriptors after the load, and 15,316 → 14,474 instructions per relayed token.
#[allow(non_upper_case_globals, unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,slab_sizes:8192-14336:16\0";

fn main() -> ExitCode {
    // Flags, environment and the --config file; a mistake in any of them is a usage error,
    // printed by clap with exit status 2.
    let config = gateway::Config::load(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // The log's shape and the traces are settings too, so the subscriber comes second. Held to
    // the end: dropping it flushes the last spans.
    let _telemetry = match gateway::telemetry::subscriber::init(&config.observe) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if config.check_config {
        // As `serve` does first, so the limits printed are the ones it would run with (the
        // default --max-connections is derived from the open-file limit).
        let _ = gateway::descriptors::raise_soft_limit();
        for warning in &config.warnings {
            eprintln!("warning: {warning}");
        }
        print!(
            "settings are valid; limits in force:\n{}",
            config.limits_block()
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match gateway::runtime(&config) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener =
            gateway::http::server::bind(config.listen, config.listen_backlog).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
            })?;
        let admin = gateway::admin::bind(&config)?;
        gateway::serve(listener, admin, config, gateway::http::shutdown::signal()).await
    });
    // Blocking threads still inside upstream reads would keep a plain drop waiting forever.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
