//! Lesson: a gateway an operator can question. Every request has an id that crosses it both
//! ways, one access line in JSON with what happened, LLM series in `/metrics` with labels a
//! client cannot multiply, a trace whose spans a real OTLP decoder reads, and alert rules a real
//! Prometheus evaluates until one fires.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use common::prometheus::{sample, samples};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    GatewayProcess, Mock, chat_body, client, gateway, gateway_with_file, json_of, metrics_text,
    post_chat, read_sse, wait_for,
};

/// One provider for the mock, naming `gpt-4o` and taking every other model (`*`): `gpt-4o` is a
/// label value, anything else `other`.
fn providers(mock: &Mock) -> String {
    format!(
        "[[providers]]\nname = \"mock\"\nbase-url = \"{}\"\nmodels = [\"gpt-4o\", \"*\"]\n",
        mock.url()
    )
}

fn config_file(toml: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("observe-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, toml).expect("write the config file");
    path.to_str().expect("UTF-8 path").to_owned()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", response.headers()))
        .to_str()
        .expect("ASCII header")
        .to_owned()
}

fn is_generated(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn request_ids_round_trip_and_reach_the_upstream() {
    let mock = Mock::fast();
    for mode in ["broken", "fixed"] {
        let gw = gateway(mode, &mock.url(), &[]);

        // The client's id: back on the response, and seen by the upstream.
        let response = post_chat(
            &gw.url(),
            &chat_body(false),
            &[("x-request-id", "ticket-4711")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        assert_eq!(header(&response, "x-request-id"), "ticket-4711", "{mode}");
        assert_eq!(
            header(&response, "x-mock-saw-x-request-id"),
            "ticket-4711",
            "{mode}"
        );

        // None sent: one is made, the same on both sides; streamed too.
        let response = post_chat(&gw.url(), &chat_body(true), &[]).await;
        let made = header(&response, "x-request-id");
        assert!(is_generated(&made), "{mode}: {made}");
        assert_eq!(header(&response, "x-mock-saw-x-request-id"), made, "{mode}");
        assert!(
            read_sse(response, Duration::from_secs(20))
                .await
                .error
                .is_none()
        );

        // Too long, or not printable: replaced, not refused.
        let long = "x".repeat(129);
        for bad in [long.as_str(), "two words"] {
            let response = post_chat(&gw.url(), &chat_body(false), &[("x-request-id", bad)]).await;
            assert_eq!(response.status(), StatusCode::OK, "{mode} {bad:?}");
            let id = header(&response, "x-request-id");
            assert!(is_generated(&id), "{mode}: {bad:?} became {id}");
            assert_eq!(header(&response, "x-mock-saw-x-request-id"), id);
        }

        // The gateway's own errors carry it in the body too; the probes on the response.
        let response = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("content-type", "application/json")
            .header("x-request-id", "bad-json-1")
            .body("{not json")
            .send()
            .await
            .expect("answer");
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["request_id"], "bad-json-1", "{body}");
        let health = client()
            .get(format!("{}/health", gw.url()))
            .send()
            .await
            .expect("health");
        assert!(is_generated(&header(&health, "x-request-id")));
    }
}

#[tokio::test]
async fn llm_histograms_have_bounded_labels_after_streamed_and_plain_requests() {
    let mock = Mock::fast();
    let gw = gateway_with_file("fixed", &providers(&mock), &["--retries", "0"]);
    for model in ["gpt-4o", "made-up-model-1", "made-up-model-2"] {
        for stream in [false, true] {
            let mut body = chat_body(stream);
            body["model"] = json!(model);
            let response = post_chat(&gw.url(), &body, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{model} {stream}");
            if stream {
                assert!(
                    read_sse(response, Duration::from_secs(20))
                        .await
                        .error
                        .is_none()
                );
            } else {
                let _ = response.bytes().await.expect("body");
            }
        }
    }
    // An upstream 500, not retried: one error of kind status_5xx.
    let response = post_chat(&gw.url(), &chat_body(false), &[("x-mock-fault", "500")]).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let _ = response.bytes().await;

    // The request duration is observed when the body ends: wait for the last one.
    let text = wait_for("seven request durations", Duration::from_secs(10), || async {
        let text = metrics_text(&gw.url()).await;
        let count = |status| {
            sample(
                &text,
                &format!(
                    "gateway_request_duration_seconds_count{{route=\"/v1/chat/completions\",status=\"{status}\"}}"
                ),
            )
        };
        (count("200") == Some(6.0) && count("500") == Some(1.0)).then_some(text)
    })
    .await;
    let series = |name: &str, model: &str| {
        sample(
            &text,
            &format!("{name}{{provider=\"mock\",model=\"{model}\"}}"),
        )
    };
    // Two requests of gpt-4o, four of invented models, all under `other`.
    assert_eq!(
        series("gateway_upstream_ttft_seconds_count", "gpt-4o"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series("gateway_upstream_ttft_seconds_count", "other"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        series("gateway_upstream_stream_duration_seconds_count", "gpt-4o"),
        Some(2.0)
    );
    // 4 tokens each: from `usage` in the plain answers, counted events in the streams.
    assert_eq!(
        series("gateway_upstream_output_tokens_sum", "gpt-4o"),
        Some(8.0),
        "{text}"
    );
    assert_eq!(
        series("gateway_upstream_output_tokens_sum", "other"),
        Some(16.0),
        "{text}"
    );
    // Gaps between tokens, in the streams only: 3 per 4-token stream.
    assert_eq!(
        series("gateway_upstream_inter_token_seconds_count", "gpt-4o"),
        Some(3.0),
        "{text}"
    );
    assert!(
        !text.contains("made-up"),
        "a client's model became a label:\n{text}"
    );
    for bucket in ["0.01", "120.0"] {
        assert!(
            text.contains(&format!(
                "gateway_upstream_ttft_seconds_bucket{{le=\"{bucket}\""
            )),
            "no {bucket} s bucket:\n{text}"
        );
    }
    let errors = samples(&text, "gateway_upstream_errors_total{");
    assert_eq!(
        sample(
            &text,
            "gateway_upstream_errors_total{provider=\"mock\",kind=\"status_5xx\"}"
        ),
        Some(1.0),
        "{errors:?}"
    );
    assert_eq!(
        errors.len(),
        7,
        "every kind at 0 from the start: {errors:?}"
    );
    // Every series that was there before is still there.
    for old in [
        "gateway_requests_total{",
        "gateway_upstream_attempts_total{",
        "gateway_shed_total{",
    ] {
        assert!(text.contains(old), "{old} is gone");
    }
}

/// The gateway's JSON lines, read to the end after the process exited.
fn json_lines(gw: &GatewayProcess) -> Vec<Value> {
    let log = gw.log();
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{log}"))
        })
        .collect()
}

/// The access line of the request named `id`.
fn access_line<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines
        .iter()
        .find(|line| line["request_id"] == id && line["outcome"].is_string())
        .unwrap_or_else(|| panic!("no access line for {id}: {lines:#?}"))
}

#[tokio::test]
async fn json_access_lines_carry_the_fields() {
    let mock = Mock::fast();
    let file = config_file(&providers(&mock));
    // One place, no queue: a request beside a running stream is shed.
    let mut gw = GatewayProcess::start(&[
        "--config",
        &file,
        "--log-format",
        "json",
        "--max-concurrent-requests",
        "1",
        "--max-queued-requests",
        "0",
    ]);
    let streamed = post_chat(
        &gw.url(),
        &chat_body(true),
        &[("x-request-id", "json-stream")],
    )
    .await;
    assert!(
        read_sse(streamed, Duration::from_secs(20))
            .await
            .error
            .is_none()
    );
    let mut other = chat_body(false);
    other["model"] = json!("some-model");
    let plain = post_chat(&gw.url(), &other, &[("x-request-id", "json-plain")]).await;
    let _ = plain.bytes().await.expect("body");
    let refused = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-request-id", "json-refused")
        .body("x")
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let slow = [("x-mock-itl-ms", "100"), ("x-mock-tokens", "20")];
    let holding = post_chat(&gw.url(), &chat_body(true), &slow).await;
    let shed = post_chat(
        &gw.url(),
        &chat_body(false),
        &[("x-request-id", "json-shed")],
    )
    .await;
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(holding);
    gw.sigterm();
    assert!(gw.exit_within(Duration::from_secs(20)).await.success());
    let log = gw.log_once_it_has("drained");
    let lines = json_lines(&gw);
    assert!(lines.len() > 3, "{log}");
    for line in &lines {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }

    let stream = access_line(&lines, "json-stream");
    assert_eq!(stream["message"], "stream ended", "{stream}");
    assert_eq!(stream["route"], "/v1/chat/completions");
    assert_eq!(stream["method"], "POST");
    assert_eq!(stream["model"], "gpt-4o");
    assert_eq!(stream["provider"], "mock");
    assert_eq!(stream["status"], 200);
    assert_eq!(stream["attempts"], 1);
    assert_eq!(stream["outcome"], "completed");
    assert_eq!(stream["tokens"], 4, "{stream}");
    assert_eq!(stream["tokens_source"], "events");
    assert!(
        stream["bytes"].as_u64().is_some_and(|b| b > 100),
        "{stream}"
    );
    let ttft = stream["ttft_ms"].as_u64().expect("ttft_ms");
    let duration = stream["duration_ms"].as_u64().expect("duration_ms");
    assert!(ttft <= duration, "{stream}");
    // The mode is in the root span the line was written in.
    assert_eq!(stream["spans"][0]["mode"], "fixed", "{stream}");

    let plain = access_line(&lines, "json-plain");
    assert_eq!(plain["model"], "some-model");
    assert_eq!(plain["tokens"], 4);
    assert_eq!(plain["tokens_source"], "usage");

    let shed = access_line(&lines, "json-shed");
    assert_eq!(shed["outcome"], "shed", "{shed}");
    assert_eq!(shed["code"], "queue_full");

    let refused = access_line(&lines, "json-refused");
    assert_eq!(refused["outcome"], "rejected");
    assert_eq!(refused["status"], 415);
    assert_eq!(refused["code"], "unsupported_media_type");
}

/// Every span an in-test collector received, decoded from OTLP's protobuf.
type Received = Arc<Mutex<Vec<OtlpSpan>>>;

/// A collector's `/v1/traces` on `127.0.0.1:0`: decodes each export with OTLP's own types.
fn collector() -> (common::embed::Running, Received) {
    let received: Received = Arc::default();
    let spans = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let spans = Arc::clone(&spans);
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut spans = spans.lock().expect("lock");
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        spans.extend(scope.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let running = common::embed::start(
        "collector",
        runtime,
        ([127, 0, 0, 1], 0).into(),
        Duration::from_millis(100),
        move |listener, shutdown| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        },
    )
    .expect("collector starts");
    (running, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &OtlpSpan, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        V::StringValue(s) => Some(s.clone()),
        V::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test]
async fn an_otlp_collector_receives_the_request_s_span_tree() {
    // The first attempt gets a 503, the retry the answer: two attempt spans.
    let mock = Mock::fast_with(&["--fault", "503", "--fault-first", "1"]);
    let (collector, received) = collector();
    let endpoint = format!("http://{}", collector.addr());
    let file = config_file(&providers(&mock));
    let mut gw = GatewayProcess::start_with_env(
        &[
            "--config",
            &file,
            "--otlp-endpoint",
            &endpoint,
            "--retry-backoff-ms",
            "1",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    let traceparent = format!("00-{trace}-{caller}-01");
    let response = post_chat(
        &gw.url(),
        &chat_body(true),
        &[("traceparent", &traceparent), ("x-request-id", "traced-1")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-gateway-attempts"), "2");
    // The upstream got the winning attempt's own context, in the caller's trace.
    let upstream = header(&response, "x-mock-saw-traceparent");
    assert!(
        read_sse(response, Duration::from_secs(20))
            .await
            .error
            .is_none()
    );
    gw.sigterm();
    assert!(
        gw.exit_within(Duration::from_secs(20)).await.success(),
        "{}",
        gw.log()
    );

    let spans = wait_for("the request's spans", Duration::from_secs(10), || async {
        let spans = received.lock().expect("lock").clone();
        spans.iter().any(|s| s.name == "stream").then_some(spans)
    })
    .await;
    let named =
        |name: &str| -> Vec<&OtlpSpan> { spans.iter().filter(|s| s.name == name).collect() };
    let requests = named("request");
    assert_eq!(requests.len(), 1, "{spans:#?}");
    let request = requests[0];
    assert_eq!(
        hex(&request.trace_id),
        trace,
        "the caller's trace continues"
    );
    assert_eq!(hex(&request.parent_span_id), caller);
    assert_eq!(
        attribute(request, "request_id").as_deref(),
        Some("traced-1")
    );
    assert_eq!(
        attribute(request, "http.route").as_deref(),
        Some("/v1/chat/completions")
    );
    let attempts = named("upstream_attempt");
    let kinds: Vec<_> = attempts.iter().map(|s| attribute(s, "kind")).collect();
    assert_eq!(attempts.len(), 2, "{kinds:?}");
    assert!(kinds.contains(&Some("first".into())) && kinds.contains(&Some("retry".into())));
    for name in ["admission", "upstream_attempt", "first_byte", "stream"] {
        let children = named(name);
        assert!(!children.is_empty(), "no {name} span: {spans:#?}");
        for child in children {
            assert_eq!(child.trace_id, request.trace_id, "{name}");
            assert_eq!(
                child.parent_span_id, request.span_id,
                "{name} is the request's child"
            );
        }
    }
    let retry = attempts
        .iter()
        .find(|s| attribute(s, "kind").as_deref() == Some("retry"))
        .expect("retry span");
    assert_eq!(upstream, format!("00-{trace}-{}-01", hex(&retry.span_id)));
    assert_eq!(attribute(retry, "status").as_deref(), Some("200"));
}

/// `deploy/prometheus/rules.yml`, as shipped.
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/prometheus/rules.yml"
);

#[test]
fn the_shipped_rules_pass_promtool() {
    let test = "the_shipped_rules_pass_promtool";
    let path = std::path::Path::new(RULES);
    let Some(checked) = common::services::prometheus::check_rules(test, path) else {
        return;
    };
    let output = checked.unwrap_or_else(|output| panic!("promtool rejects {RULES}:\n{output}"));
    assert!(output.contains("SUCCESS: 10 rules found"), "{output}");
}

/// The shipped rules with every `for:` at 0 and 20 s windows: the same expressions, judged as
/// soon as a test can produce their condition.
fn rules_for_a_test() -> String {
    let rules = std::fs::read_to_string(RULES).expect("the rules file");
    let mut quick: String = rules
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for: ") {
            Some(_) => line.replace(line.trim_start(), "for: 0s"),
            None => line.replace("[5m]", "[20s]"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    quick.push('\n');
    assert!(
        !quick.contains("for: 1m") && !quick.contains("[5m]"),
        "{quick}"
    );
    quick
}

/// `GET {prometheus}/api/v1/{path}`'s `data`.
async fn prometheus_api(base: &str, path: &str) -> Value {
    let response = client()
        .get(format!("{base}/api/v1/{path}"))
        .send()
        .await
        .expect("prometheus answers");
    let body: Value = response.json().await.expect("prometheus JSON");
    assert_eq!(body["status"], "success", "{body}");
    body["data"].clone()
}

fn query(expr: &str) -> String {
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("query?query={encoded}")
}

#[tokio::test]
async fn a_real_prometheus_sees_the_series_and_fires_the_pool_alert() {
    let test = "a_real_prometheus_sees_the_series_and_fires_the_pool_alert";
    let mock = Mock::fast();
    // Broken mode, two pool threads: four slow streams saturate the pool with two queued.
    let gw = gateway_with_file(
        "broken",
        &providers(&mock),
        &[
            "--blocking-threads",
            "2",
            "--admin-listen",
            "127.0.0.1:0",
            "--readiness-interval-ms",
            "100",
        ],
    );
    let quick = rules_for_a_test();
    let copy = std::env::temp_dir().join(format!("observe-rules-{}.yml", std::process::id()));
    std::fs::write(&copy, &quick).expect("write the test rules");
    if let Some(checked) = common::services::prometheus::check_rules(test, &copy) {
        checked.unwrap_or_else(|output| panic!("promtool rejects the test copy:\n{output}"));
    }
    let _ = std::fs::remove_file(&copy);
    let admin = gw.admin_addr().expect("the admin plane").to_string();
    let Some(prometheus) = common::services::Prometheus::start_for(test, &[admin], &quick) else {
        return;
    };
    let prom = prometheus.url();

    // A short load: plain and streamed answers, of a configured model and another.
    for model in ["gpt-4o", "something-else"] {
        for stream in [false, true] {
            let mut body = chat_body(stream);
            body["model"] = json!(model);
            let response = post_chat(&gw.url(), &body, &[]).await;
            let _ = response.bytes().await.expect("body");
        }
    }
    // The new series, scraped, with their labels.
    let ttft = wait_for(
        "the TTFT series in Prometheus",
        Duration::from_secs(30),
        || async {
            let data = prometheus_api(&prom, &query("gateway_upstream_ttft_seconds_count")).await;
            let result = data["result"].as_array().cloned().unwrap_or_default();
            (result.len() == 2).then_some(result)
        },
    )
    .await;
    let mut models: Vec<String> = ttft
        .iter()
        .map(|s| {
            assert_eq!(s["metric"]["provider"], "mock", "{s}");
            s["metric"]["model"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    models.sort();
    assert_eq!(models, ["gpt-4o", "other"]);
    for series in [
        "gateway_request_duration_seconds_bucket{route=\"/v1/chat/completions\",status=\"200\",le=\"120.0\"}",
        "gateway_upstream_inter_token_seconds_count{model=\"gpt-4o\"}",
        "gateway_readiness_delay_seconds{check=\"blocking_pool\"}",
        "gateway_readiness_ready",
        "gateway:requests:rate5m{route=\"/v1/chat/completions\"}",
    ] {
        // A recording rule needs two scrapes in its window, then an evaluation.
        wait_for(series, Duration::from_secs(20), || async {
            let data = prometheus_api(&prom, &query(series)).await;
            data["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
                .then_some(())
        })
        .await;
    }

    // Four 10 s streams on a pool of two: two run, two wait. The alert must fire.
    let slow = [("x-mock-itl-ms", "250"), ("x-mock-tokens", "40")];
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let url = gw.url();
            tokio::spawn(async move {
                let response = post_chat(&url, &chat_body(true), &slow).await;
                let _ = read_sse(response, Duration::from_secs(60)).await;
            })
        })
        .collect();
    let firing = wait_for(
        "GatewayBlockingPoolSaturated firing",
        Duration::from_secs(30),
        || async {
            let data = prometheus_api(&prom, "alerts").await;
            let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
            alerts
                .iter()
                .any(|a| {
                    a["labels"]["alertname"] == "GatewayBlockingPoolSaturated"
                        && a["state"] == "firing"
                })
                .then_some(alerts)
        },
    )
    .await;
    let alert = firing
        .iter()
        .find(|a| a["labels"]["alertname"] == "GatewayBlockingPoolSaturated")
        .expect("the alert");
    assert_eq!(alert["labels"]["severity"], "page", "{alert}");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("#alerts")),
        "{alert}"
    );
    for stream in streams {
        stream.abort();
    }
    drop(gw);
}
