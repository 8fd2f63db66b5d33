//! Logging and tracing: log lines to standard error, filtered by `RUST_LOG`, as readable lines or
//! JSON; and, when an OTLP endpoint is configured, spans exported to an OpenTelemetry collector.

use std::io::IsTerminal;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::{Cli, Command};
use crate::config::{self, BatonConfig, ConfigOverrides, LogFormat};

/// Which spans are exported: every `info` span (HTTP requests, enqueues, job executions) and
/// the `debug` spans around backend calls.
const EXPORT_FILTER: &str = "info,baton_metrics=debug";

/// The standard variables that turn OTLP export on without `otlp_endpoint`.
const OTLP_ENV: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The installed telemetry. Dropping it flushes the spans not yet exported, so keep it until
/// the program ends (outside the async runtime: the exporter blocks).
#[must_use = "dropping it stops the export of spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: cannot flush the last spans to the OTLP endpoint: {error}");
        }
    }
}

/// Installs logging and tracing for `cli`'s command, from the configuration it will run with.
/// A configuration that does not load is left to the command to report; logging then takes
/// its defaults.
pub fn start(cli: &Cli) -> Telemetry {
    let (default_level, overrides) = match &cli.command {
        Command::Serve(args) => ("info", args.overrides()),
        _ => ("warn", ConfigOverrides::default()),
    };
    let config = config::load(cli.config.as_deref(), &overrides).ok();
    // Only `serve` writes logs for collectors; the other commands' logs are read by people.
    let format = match (&cli.command, &config) {
        (Command::Serve(_), Some(config)) => config.log_format,
        _ => LogFormat::Pretty,
    };
    let endpoint = config.as_ref().and_then(otlp_endpoint);
    let export = endpoint.map(|endpoint| Export {
        endpoint,
        command: command_name(&cli.command),
    });
    match init(default_level, format, export) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("warning: spans are not exported: {error:#}");
            init(default_level, format, None).unwrap_or(Telemetry { provider: None })
        }
    }
}

/// Where and as what spans are exported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The OTLP/HTTP traces URL, or `None` for the one the standard variables give.
    pub endpoint: Option<String>,
    /// The subcommand, recorded on every span as the resource attribute `baton.command`.
    pub command: &'static str,
}

/// Where `config` says to export spans: `Some(Some(url))` for `otlp_endpoint`, `Some(None)`
/// when only the standard variables are set, `None` for no export.
fn otlp_endpoint(config: &BatonConfig) -> Option<Option<String>> {
    match &config.otlp_endpoint {
        Some(base) => Some(Some(format!("{}/v1/traces", base.trim_end_matches('/')))),
        None => OTLP_ENV
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
            .then_some(None),
    }
}

/// Installs the global subscriber: log lines filtered by `RUST_LOG` (else `default_level`:
/// `info` for `serve`, `warn` for the commands whose output is meant for people or scripts),
/// written in `format`; and spans exported as `export` says.
///
/// # Errors
///
/// The OTLP exporter cannot be built (an invalid endpoint in the standard variables).
pub fn init(
    default_level: &str,
    format: LogFormat,
    export: Option<Export>,
) -> anyhow::Result<Telemetry> {
    let provider = export.map(tracer_provider).transpose()?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colors for a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Pretty => logs.boxed(),
        LogFormat::Json => logs.json().with_current_span(true).boxed(),
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("baton"))
            .with_filter(EnvFilter::new(EXPORT_FILTER))
    });
    // A second install (as in tests that call this twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(Telemetry { provider })
}

/// A tracer provider exporting in batches over OTLP/HTTP.
fn tracer_provider(export: Export) -> anyhow::Result<SdkTracerProvider> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = &export.endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter
        .build()
        .context("cannot build the OTLP span exporter")?;
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "baton.command",
        export.command,
    ));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("baton");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The subcommand's name, as `baton --help` lists it.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Serve(_) => "serve",
        Command::Worker(_) => "worker",
        Command::Master(_) => "master",
        Command::Lock(_) => "lock",
        Command::Task(_) => "task",
        Command::Bench(_) => "bench",
        _ => "client",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_endpoint_is_the_collectors_base_url() {
        let config = BatonConfig {
            otlp_endpoint: Some("http://collector:4318/".to_owned()),
            ..BatonConfig::default()
        };
        assert_eq!(
            otlp_endpoint(&config),
            Some(Some("http://collector:4318/v1/traces".to_owned()))
        );
    }

    #[test]
    fn an_otlp_endpoint_that_is_not_an_http_url_is_refused_by_name() {
        for endpoint in ["collector:4318", "grpc://collector:4317", "http://"] {
            let config = BatonConfig {
                otlp_endpoint: Some(endpoint.to_owned()),
                ..BatonConfig::default()
            };
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("\"otlp_endpoint\""), "{endpoint}: {error}");
        }
    }
}
