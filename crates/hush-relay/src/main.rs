//! `hush-relay`: the hush relay server.
//!
//! ```text
//! hush-relay [--data DIR] [--listen ADDR:PORT] [--database URL] [--config FILE] [--metrics ADDR:PORT]
//! hush-relay --data DIR fingerprint
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hush_relay::config::Config;
use hush_relay::relay::Relay;
use hush_relay::server::{self, TransportOptions};
use hush_relay::store::Store;
use hush_relay::store::postgres::PgStore;
use hush_relay::store::sqlite::SqliteStore;
use hush_relay::tls;

const USAGE: &str = "usage: hush-relay [--data DIR] [--listen ADDR:PORT] [--database URL] [--config FILE] [--metrics ADDR:PORT] [serve|fingerprint]

  serve (default)  serve QUIC on --listen (default 127.0.0.1:4433) with data in --data (default ./hush-relay-data)
  fingerprint      print the relay certificate's fingerprint (clients pin it), creating the certificate if needed

Every option and its default is documented in spec/relay.md.";

enum Command {
    Serve,
    Fingerprint,
}

fn parse(args: impl Iterator<Item = String>) -> Result<(Config, Command)> {
    let args: Vec<String> = args.collect();
    let mut config_file = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--config" {
            config_file = Some(PathBuf::from(
                args.get(i + 1).context("--config needs a file")?,
            ));
        }
        i += 1;
    }
    let mut config = match &config_file {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let mut command = Command::Serve;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--config" => {
                value("--config")?;
            }
            "--data" => config.data = PathBuf::from(value("--data")?),
            "--listen" => {
                let v = value("--listen")?;
                config.listen = v
                    .parse()
                    .with_context(|| format!("--listen {v}: expected ADDR:PORT"))?;
            }
            "--database" => config.database = Some(value("--database")?),
            "--metrics" => {
                let v = value("--metrics")?;
                config.metrics = Some(
                    v.parse()
                        .with_context(|| format!("--metrics {v}: expected ADDR:PORT"))?,
                );
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("hush-relay {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            "serve" => command = Command::Serve,
            "fingerprint" => command = Command::Fingerprint,
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    config.validate()?;
    Ok((config, command))
}

fn identity(config: &Config) -> Result<tls::Identity> {
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => tls::load(cert, key)?,
        _ => tls::load_or_create(&config.data)?,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hush-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let (config, command) = parse(std::env::args().skip(1))?;
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("creating data directory {}", config.data.display()))?;
    let identity = identity(&config)?;
    if let Command::Fingerprint = command {
        println!("{}", identity.fingerprint());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, identity))
}

async fn serve(config: Config, identity: tls::Identity) -> Result<()> {
    match config.database.clone() {
        Some(url) => {
            let store = PgStore::open(&url)
                .await
                .with_context(|| format!("connecting to PostgreSQL at {}", redact(&url)))?;
            serve_with(store, redact(&url), config, identity).await
        }
        None => {
            let db = config.data.join("relay.sqlite");
            let store = SqliteStore::open_with(&db, config.sqlite())
                .await
                .with_context(|| format!("opening {}", db.display()))?;
            serve_with(store, db.display().to_string(), config, identity).await
        }
    }
}

/// A database URL without its password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn serve_with<S: Store>(
    store: S,
    database: String,
    config: Config,
    identity: tls::Identity,
) -> Result<()> {
    let fingerprint = identity.fingerprint();
    let relay = Arc::new(Relay::new(store, config.limits()));
    let transport = TransportOptions {
        listen: config.listen,
        keep_alive: Duration::from_secs(config.keep_alive_secs),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        max_streams: config.max_streams,
        udp_buffer: config.udp_buffer_bytes,
    };
    let (endpoint, (rcvbuf, sndbuf)) = server::bind(&transport, identity)?;
    let listen = endpoint.local_addr().context("reading the bound address")?;
    tracing::info!(%listen, %fingerprint, %database, rcvbuf, sndbuf, "hush-relay serving");

    if let Some(addr) = config.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics address {addr}"))?;
        let relay = relay.clone();
        tokio::spawn(async move {
            if let Err(e) = hush_relay::metrics::serve(listener, relay).await {
                tracing::error!(error = %e, %addr, "metrics server stopped");
            }
        });
    }
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let sweeper = {
        let relay = relay.clone();
        let mut shutdown = shutdown.clone();
        let every = Duration::from_secs(config.sweep_interval_secs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => match relay.sweep(server::unix_now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(expired = n, "swept expired envelopes"),
                        Err(e) => tracing::warn!(error = %e, "sweep failed"),
                    },
                    _ = shutdown.changed() => break,
                }
            }
        })
    };
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        let _ = stop.send(true);
    });
    server::serve(endpoint, relay, config.max_connections, shutdown).await;
    let _ = sweeper.await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
