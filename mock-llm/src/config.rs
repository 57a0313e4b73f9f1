//! Command-line flags of `mock-llm`. Every flag has an env override so scripts and CI can set
//! them without quoting; per-request query parameters (`/slow_stream`) and `x-mock-*` headers
//! (`/v1/chat/completions`, see [`crate::knobs`]) override the pacing defaults.

use std::net::SocketAddr;

use clap::Parser;

use crate::faults::Fault;
use crate::knobs::{MAX_DELAY_MS, MAX_TOKENS, parse_fraction};

/// A slow-streaming upstream for the gateway demo (plain chunks and OpenAI-style chat
/// completions, with latency and fault knobs), with counters of what each stream did.
#[derive(Debug, Clone, Parser)]
#[command(name = "mock-llm", version, args_override_self = true)]
pub struct Config {
    /// Address to listen on. An IP literal: `localhost` costs a DNS lookup in every client.
    #[arg(long, env = "MOCK_LLM_LISTEN", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,

    /// Chunks per `/slow_stream` response when the request does not say (`?chunks=`).
    #[arg(long, env = "MOCK_LLM_CHUNKS", default_value_t = 90,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::slow_stream::MAX_CHUNKS)))]
    pub chunks: u32,

    /// Milliseconds between chunks when the request does not say (`?interval_ms=`).
    /// 90 chunks x 500 ms is the 45 s stream of the original reproduction.
    #[arg(long, env = "MOCK_LLM_INTERVAL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(0..=crate::slow_stream::MAX_INTERVAL_MS))]
    pub interval_ms: u64,

    /// Chat completions: milliseconds before the first token (`x-mock-ttft-ms` overrides).
    #[arg(long, env = "MOCK_LLM_TTFT_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub ttft_ms: u64,

    /// Chat completions: milliseconds between tokens (`x-mock-itl-ms` overrides).
    #[arg(long, env = "MOCK_LLM_ITL_MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub itl_ms: u64,

    /// Chat completions: tokens per completion, before `max_tokens` caps it (`x-mock-tokens`
    /// overrides).
    #[arg(long, env = "MOCK_LLM_TOKENS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_TOKENS)))]
    pub tokens: u32,

    /// Fraction 0..=1: each delay (TTFT and every inter-token gap) is drawn uniformly within
    /// ±jitter × its base value.
    #[arg(long, env = "MOCK_LLM_JITTER", default_value_t = 0.0, value_parser = parse_fraction)]
    pub jitter: f64,

    /// Probability 0..=1 that a delay (after jitter) is 10 times longer: the rare slow request
    /// that p99 latencies and idle timeouts are made of.
    #[arg(long, env = "MOCK_LLM_HEAVY_TAIL", default_value_t = 0.0, value_parser = parse_fraction)]
    pub heavy_tail: f64,

    /// Chat completions: the fault to inject: 429, 500, 503, reset, stall or slow. None by
    /// default.
    #[arg(long, env = "MOCK_LLM_FAULT")]
    pub fault: Option<Fault>,

    /// Probability 0..=1 that a request gets `--fault`. Every request when not given.
    #[arg(long, env = "MOCK_LLM_FAULT_RATE", default_value_t = 1.0, value_parser = parse_fraction,
          requires = "fault")]
    pub fault_rate: f64,

    /// The first N chat requests get `--fault`, the rest none (instead of `--fault-rate`): a
    /// replica that fails, then recovers. Deterministic, for retry and hedging tests.
    #[arg(
        long,
        env = "MOCK_LLM_FAULT_FIRST",
        default_value_t = 0,
        requires = "fault",
        conflicts_with = "fault_rate"
    )]
    pub fault_first: u64,

    /// Seed of the jitter, heavy-tail and fault draws: the same seed and the same sequence of
    /// requests give the same delays and faults. Random (and logged) when not given.
    #[arg(long, env = "MOCK_LLM_SEED")]
    pub seed: Option<u64>,

    /// Model ids listed by `GET /v1/models`, comma-separated. Chat requests may name any model.
    #[arg(
        long,
        env = "MOCK_LLM_MODELS",
        default_value = "mock-1",
        value_delimiter = ','
    )]
    pub models: Vec<String>,
}
