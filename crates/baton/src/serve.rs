//! `baton serve`: the HTTP API, the broker and the upkeep loop ([`crate::upkeep`]) on the
//! configured backend, until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baton_core::Backend;
use baton_metrics::{Metered, Metrics};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::auth::Access;
use crate::backend::{self, redact};
use crate::config::BatonConfig;
use crate::insight::{Insight, Observed};
use crate::upkeep::{self, Upkeep, stopped};

/// How long open connections may take to finish after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves the API on `config.listen` over `config.backend` until SIGINT or SIGTERM.
///
/// # Errors
///
/// The backend cannot be opened, the address cannot be bound, or serving fails.
pub async fn run(config: &BatonConfig) -> anyhow::Result<()> {
    let backend = backend::connect(&config.backend, &config.table_prefix).await?;
    let backend = Arc::new(Metered::new(backend, Arc::new(Metrics::new())));
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    tracing::info!(
        "baton serving on http://{local} with backend {}",
        redact(&config.backend)
    );
    if config.api_token.is_none() && !local.ip().is_loopback() {
        tracing::warn!(
            "no api_token is configured, so anyone who reaches http://{local} can enqueue and \
             cancel jobs; set api_token (or BATON_API_TOKEN)"
        );
    }
    let broker = if config.broker.enabled {
        let settings = &config.broker;
        let broker = baton_broker::start(
            backend.clone(),
            baton_broker::BrokerConfig {
                endpoint: settings.endpoint.clone(),
                publish_endpoint: settings.publish_endpoint.clone(),
                quit_token: settings.quit_token.as_ref().map(|token| token.0.clone()),
                default_timeout: settings.job_timeout,
                ..baton_broker::BrokerConfig::default()
            },
        )
        .await
        .with_context(|| format!("cannot start the broker on {}", settings.endpoint))?;
        tracing::info!("baton broker on {}", broker.endpoint());
        Some(broker)
    } else {
        None
    };
    let access = Access::new(config.api_token.clone(), config.api_open_reads);
    let roster = broker.as_ref().map(baton_broker::BrokerHandle::roster);
    let upkeep = Upkeep {
        retention: config.retention,
        pools: config.sync.pool_names()?,
    };
    tracing::info!(
        "baton upkeep every {:?}: expired leases, finished jobs past {:?}, dead owners in pools {:?}",
        upkeep::MAINTENANCE_INTERVAL,
        upkeep.retention,
        config.sync.pools
    );
    let served = serve_metered(
        listener,
        backend,
        upkeep,
        access,
        roster,
        config.tasks.dir.clone(),
        shutdown_signal(),
    )
    .await;
    if let Some(broker) = broker {
        // Waiting workers are told to quit; running jobs stay leased and run again elsewhere.
        broker.shutdown().await.context("stopping the broker")?;
    }
    served
}

/// Serves the API on `listener` over `backend`, with maintenance, until `shutdown` completes;
/// then lets open requests finish for up to [`SHUTDOWN_GRACE`].
///
/// # Errors
///
/// Serving fails.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    retention: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_access(listener, backend, retention, Access::default(), shutdown).await
}

/// [`serve`], with `access` deciding who may call what (see [`crate::api::auth`]).
///
/// # Errors
///
/// Serving fails.
pub async fn serve_with_access(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    retention: Duration,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let backend = Arc::new(Metered::new(backend, Arc::new(Metrics::new())));
    let upkeep = Upkeep {
        retention,
        pools: Vec::new(),
    };
    let task_dir = crate::config::TaskSettings::default().dir;
    serve_metered(listener, backend, upkeep, access, None, task_dir, shutdown).await
}

/// [`serve_with_access`] over a backend already counted in metrics (which `GET /metrics`
/// renders), so that other users of it, such as the broker, are counted too; `roster` reads
/// the workers of the broker this server runs, if any, for `GET /api/v1/workers`; `task_dir`
/// is where `baton task run` on this host records its tasks, for `GET /api/v1/tasks`.
///
/// # Errors
///
/// Serving fails.
pub async fn serve_metered(
    listener: TcpListener,
    metered: Arc<Metered<dyn Backend>>,
    upkeep: Upkeep,
    access: Access,
    roster: Option<baton_broker::Roster>,
    task_dir: std::path::PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let backend: Arc<dyn Backend> = metered.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let observed = Arc::new(Observed::default());
    let maintenance = upkeep::spawn(
        backend.clone(),
        metered.metrics().clone(),
        observed.clone(),
        upkeep,
        stop_rx.clone(),
    );
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let router = crate::api::app(metered, access, roster, Insight::new(observed, task_dir));
    let server = axum::serve(listener, router).with_graceful_shutdown(stopped(stop_rx.clone()));
    let outcome = tokio::select! {
        outcome = server => outcome.context("http server failed"),
        () = async { stopped(stop_rx).await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown; closing them");
            Ok(())
        }
    };
    maintenance.abort();
    let _ = maintenance.await;
    tracing::info!("stopped");
    outcome
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
