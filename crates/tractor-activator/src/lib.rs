//! `tractor activator`: holds requests for models scaled to zero, signals demand to the operator, and forwards
//! the held requests to the first ready pod. Its listeners, admin port and shutdown are wired here.
//!
//! The request path (`handle`) reads an in-memory view of the cluster ([`targets::Targets`]) and signals
//! demand through a [`hold::WakeSignal`]; `cluster` feeds the one and implements the other with kube, so tests
//! run the real listeners against a view and a signal of their own.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cluster;
pub mod handle;
pub mod hold;
pub mod metrics;
pub mod proxy;
pub mod rbac;
pub mod reply;
pub mod route;
pub mod targets;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::handle::{Defaults, Shared};
use crate::hold::{Holds, WakeSignal, Wakes};
use crate::metrics::Metrics;
use crate::proxy::{Ports, Proxy};
use crate::reply::Protocol;
use crate::targets::Targets;

/// Pause after a failed accept.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Command-line flags of `tractor activator`; every flag has an environment fallback.
#[derive(clap::Args, Debug, Clone)]
pub struct ActivatorArgs {
    /// Where REST requests arrive (HTTP/1.1 and h2c): the model Services' `http` port leads here at zero.
    #[arg(
        long,
        env = "TRACTOR_ACTIVATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,
    /// Where gRPC requests arrive (h2c): the model Services' `grpc` port leads here at zero.
    #[arg(
        long,
        env = "TRACTOR_ACTIVATOR_GRPC_ADDR",
        default_value = "0.0.0.0:8081"
    )]
    pub grpc_addr: SocketAddr,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "TRACTOR_ADMIN_ADDR", default_value = "0.0.0.0:8090")]
    pub admin_addr: SocketAddr,
    /// Watch one namespace only (default: all namespaces).
    #[arg(long, env = "TRACTOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// Requests held per model while it wakes, when its `scaleToZero.maxHeldRequests` is not set; more are
    /// answered 503 with `Retry-After`.
    #[arg(
        long,
        env = "TRACTOR_ACTIVATOR_DEFAULT_MAX_HELD",
        default_value_t = 100
    )]
    pub default_max_held: usize,
    /// How long a request is held for a ready pod, when its model's `scaleToZero.holdTimeout` is not set
    /// (`30s`, `1m`).
    #[arg(long, env = "TRACTOR_ACTIVATOR_DEFAULT_HOLD_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub default_hold_timeout: Duration,
    /// Largest request body buffered for a held request; larger ones are answered 413.
    #[arg(long, env = "TRACTOR_ACTIVATOR_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,
}

fn parse_duration(text: &str) -> Result<Duration, tractor_api::duration::InvalidDuration> {
    text.parse::<tractor_api::duration::Duration>()
        .map(|duration| duration.as_std())
}

/// Why the activator could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("binding the {listener} listener on {addr}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// Where.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No Kubernetes client could be built from the environment.
    #[error("creating the Kubernetes client")]
    KubeClient(#[source] kube::Error),
    /// The metrics could not be registered.
    #[error("registering the metrics")]
    RegisterMetrics(#[source] prometheus::Error),
    /// The admin server failed.
    #[error("serving the admin port")]
    ServeAdmin(#[source] std::io::Error),
}

impl Error {
    /// A short, bounded name for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "bind",
            Self::KubeClient(_) => "kube_client",
            Self::RegisterMetrics(_) => "metrics",
            Self::ServeAdmin(_) => "admin",
        }
    }
}

/// The three bound listeners.
#[derive(Debug)]
pub struct Listeners {
    /// REST: HTTP/1.1 and h2c.
    pub http: TcpListener,
    /// gRPC: h2c.
    pub grpc: TcpListener,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds all three.
    pub async fn bind(
        http: SocketAddr,
        grpc: SocketAddr,
        admin: SocketAddr,
    ) -> Result<Self, Error> {
        let bind = |listener: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|source| Error::Bind {
                listener,
                addr,
                source,
            })
        };
        Ok(Self {
            http: bind("HTTP", http).await?,
            grpc: bind("gRPC", grpc).await?,
            admin: bind("admin", admin).await?,
        })
    }
}

/// An activator over a view of the cluster and a wake signal, ready to serve.
#[derive(Debug)]
pub struct Activator {
    shared: Arc<Shared>,
    stopping: Arc<AtomicBool>,
}

impl Activator {
    /// Holds and forwards for the models in `targets`, pods serving on `ports`, signalling demand to `wake`.
    pub fn new(
        targets: Arc<Targets>,
        wake: Arc<dyn WakeSignal>,
        defaults: Defaults,
        ports: Ports,
    ) -> Result<Self, Error> {
        let metrics = Metrics::new().map_err(Error::RegisterMetrics)?;
        Ok(Self {
            shared: Arc::new(Shared {
                targets,
                holds: Holds::new(metrics.clone()),
                wakes: Wakes::new(wake, metrics.clone()),
                metrics,
                proxy: Proxy::new(ports),
                defaults,
            }),
            stopping: Arc::default(),
        })
    }

    /// The metrics, as `/metrics` renders them.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Serves until `shutdown` resolves; then readiness goes false, the listeners close, and held and in-flight
    /// requests finish (each within its own deadline) before it returns.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let Listeners { http, grpc, admin } = listeners;
        let (stop, stopped) = watch::channel(false);
        let http = tokio::spawn(accept(
            http,
            Protocol::Http,
            Arc::clone(&self.shared),
            stopped.clone(),
        ));
        let grpc = tokio::spawn(accept(
            grpc,
            Protocol::Grpc,
            Arc::clone(&self.shared),
            stopped,
        ));
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_app = admin::app(admin::Admin {
            targets: Arc::clone(&self.shared.targets),
            metrics: self.shared.metrics.clone(),
            stopping: Arc::clone(&self.stopping),
        });
        let admin = tokio::spawn(
            axum::serve(admin, admin_app)
                .with_graceful_shutdown(async {
                    let _ = admin_stopped.await;
                })
                .into_future(),
        );
        shutdown.await;
        info!("shutdown: not ready, no new connections; held and in-flight requests finish");
        self.stopping.store(true, Ordering::Release);
        let _ = stop.send(true);
        let _ = http.await;
        let _ = grpc.await;
        // The admin port stays up while requests drain, so liveness holds.
        let _ = admin_stop.send(());
        if let Ok(Err(source)) = admin.await {
            return Err(Error::ServeAdmin(source));
        }
        info!("drained; exiting");
        Ok(())
    }
}

/// Accepts connections on `listener` until `stopped`, then lets open ones finish their requests.
async fn accept(
    listener: TcpListener,
    protocol: Protocol,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A slow client's headers, and HTTP/2 keep-alive, need a timer.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    if protocol == Protocol::Grpc {
        builder = builder.http2_only();
    }
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(error = %error, "accept failed");
                // Out of file descriptors, most likely: give open connections time to close instead of spinning.
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        // Small request/response pairs: Nagle's algorithm with delayed ACKs would add tens of milliseconds.
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let service = service_fn(move |request| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(handle::handle(shared, protocol, request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%peer, error = %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// SIGTERM (the kubelet) or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// Runs `tractor activator` until SIGTERM, then drains and returns.
pub async fn run(args: ActivatorArgs) -> Result<(), Error> {
    let ActivatorArgs {
        http_addr,
        grpc_addr,
        admin_addr,
        namespace,
        default_max_held,
        default_hold_timeout,
        max_body_bytes,
    } = args;
    let client = kube::Client::try_default()
        .await
        .map_err(Error::KubeClient)?;
    let targets = Arc::new(Targets::new());
    let activator = Activator::new(
        Arc::clone(&targets),
        Arc::new(cluster::KubeWake::new(client.clone())),
        Defaults {
            max_held: default_max_held,
            hold_timeout: default_hold_timeout,
            max_body_bytes,
        },
        Ports::default(),
    )?;
    let listeners = Listeners::bind(http_addr, grpc_addr, admin_addr).await?;
    info!(http = %http_addr, grpc = %grpc_addr, admin = %admin_addr, namespace = ?namespace, "activator listening");
    let watches = tokio::spawn(cluster::watch(client, namespace, targets));
    let served = activator.serve(listeners, shutdown_signal()).await;
    watches.abort();
    served
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ActivatorArgs,
    }

    #[test]
    fn flags_default_to_the_contract() {
        let Cli { args } = Cli::try_parse_from(["activator"]).expect("defaults");
        assert_eq!(args.http_addr, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(args.grpc_addr, "0.0.0.0:8081".parse().expect("addr"));
        assert_eq!(args.admin_addr, "0.0.0.0:8090".parse().expect("addr"));
        assert_eq!(args.namespace, None);
        assert_eq!(args.default_max_held, 100);
        assert_eq!(args.default_hold_timeout, Duration::from_secs(30));
        assert_eq!(args.max_body_bytes, 64 << 20);
    }

    #[test]
    fn hold_timeouts_are_api_durations() {
        let parse = |text: &str| {
            Cli::try_parse_from(["activator", "--default-hold-timeout", text])
                .map(|cli| cli.args.default_hold_timeout)
        };
        assert_eq!(parse("1.5m").expect("1.5m"), Duration::from_secs(90));
        assert_eq!(parse("250ms").expect("250ms"), Duration::from_millis(250));
        assert!(parse("soon").is_err());
    }
}
