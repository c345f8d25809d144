//! The one tractor binary: each subcommand wires a crate of the workspace to the command line.

use clap::{Parser, Subcommand, ValueEnum};

/// tractor: trained model in, served, monitored and autoscaled endpoint out.
#[derive(Parser, Debug)]
#[command(name = "tractor", version, about)]
struct Cli {
    /// Log line format.
    #[arg(long, env = "TRACTOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the ModelDeployment CustomResourceDefinition as YAML.
    Crd,
    /// Watch ModelDeployments and reconcile them into Jobs, Deployments and Services.
    Operator(tractor_operator::OperatorArgs),
    /// Serve one model over the Open Inference Protocol (REST and gRPC) until SIGTERM.
    Serve(tractor_serve::ServeArgs),
    /// Fetch, verify, convert, optimize and evaluate a model into a deterministic NNEF artifact and a report.
    Optimize(tractor_optimize::OptimizeArgs),
    /// Download a published artifact by digest from the artifact store, verify it and write it where the server
    /// reads it.
    Fetch(tractor_optimize::FetchArgs),
    /// Hold requests for models scaled to zero, wake them and forward the requests once a pod is ready.
    Activator(tractor_activator::ActivatorArgs),
    /// Print a model's signature, op histogram, parameter count, size and FLOPs estimate as JSON.
    Inspect(tractor_optimize::InspectArgs),
}

/// How log lines are written.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line, for log pipelines.
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn main() -> anyhow::Result<()> {
    let Cli {
        log_format,
        command,
    } = Cli::parse();
    match command {
        Command::Crd => print!("{}", tractor_api::crd_yaml()),
        Command::Serve(args) => {
            init_tracing(log_format);
            tractor_serve::run(args)?;
        }
        Command::Optimize(args) => {
            init_tracing(log_format);
            let code = tractor_optimize::run(args);
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Fetch(args) => {
            init_tracing(log_format);
            let code = tractor_optimize::run_fetch(args);
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::Inspect(args) => {
            // Warnings (a ZipMap served as its probability tensor) go to stderr; the JSON to stdout.
            init_tracing(log_format);
            println!("{}", tractor_optimize::inspect(&args)?.to_json());
        }
        Command::Operator(args) => {
            init_tracing(log_format);
            runtime()?.block_on(tractor_operator::run(args))?;
        }
        Command::Activator(args) => {
            init_tracing(log_format);
            runtime()?.block_on(tractor_activator::run(args))?;
        }
    }
    Ok(())
}
